// Package realtime is Directus's own WebSocket protocol (the one Directus
// serves at /websocket and @directus/sdk's realtime() speaks), which the
// broker serves at realtime_path (/realtime): frames parsed into the
// session's operations, results and events encoded as Directus encodes
// them. codec.go lists where the broker deliberately differs.
package realtime
