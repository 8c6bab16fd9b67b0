// Package transport owns the WebSocket connections: the upgrade (token
// check, connection limit, origin), each connection's bounded send queue,
// its inbox of received frames handled in order, the frame rate and the
// bound on concurrent items requests, eviction of slow consumers and the
// close at shutdown. It knows no protocol: a Codec (protocol/extension,
// protocol/realtime) turns frames into the session's operations.
package transport
