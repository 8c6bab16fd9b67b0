// Package extension is the WebSocket protocol of the Directus "websocket
// subscribe" extension, which the broker serves at websocket_path
// (/websocket): frames parsed into the session's operations, results and
// events encoded as that extension's frames. docs/protocols.md describes it
// frame by frame.
package extension
