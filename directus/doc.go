// Package directus is everything that speaks to Directus: the REST client
// (forwarded CRUD, token checks, permission-filtered reads), the normalizer
// for the bodies Directus Flows and webhooks post, and what the service
// user reads of the permission model (Permissions) with its three views:
// Classifier (access classes: classes.go, owners.go, mixed.go), Watcher
// (access changes, watcher.go) and Coverage (which collections a Flow
// sends, coverage.go). The model's loader is model_load.go and access.go.
package directus
