// Package directus is everything that speaks to Directus: the REST client
// (forwarded CRUD, token checks, permission-filtered reads), the normalizer
// for the bodies Directus Flows and webhooks post, and Flow provisioning.
package directus
