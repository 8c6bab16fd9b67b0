// Package handlers is the HTTP and WebSocket edge of the broker: the webhook
// that takes Directus events in, the WebSocket endpoint that serves
// subscribers and forwards their CRUD frames to Directus, health and metrics,
// and the example page.
package handlers
