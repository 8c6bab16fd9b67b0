// Package handlers is the HTTP edge of the broker: the routes, the webhook
// that takes Directus events in, health, readiness and the admin listener,
// the example page, and the graceful shutdown. The WebSocket endpoints are
// routed here and served by package transport, each speaking a protocol of
// package protocol (extension at websocket_path, realtime at
// realtime_path).
package handlers
