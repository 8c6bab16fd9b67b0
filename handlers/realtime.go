package handlers

import (
	"context"
	"encoding/json"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// Directus's own realtime protocol (the one Directus serves at /websocket and
// the official @directus/sdk's realtime() speaks) on realtime_path.
// Connections are ordinary clients (client.go) whose protocol is a
// realtimeConn: fan-out, permission filtering, token expiry and eviction are
// shared with the extension protocol; only the framing and the
// authentication dance differ. e2e/sdk runs the SDK against this endpoint
// and against Directus itself (scripts/sdk-test.sh).
//
// Where the broker deliberately differs from Directus 11/12:
//   - A delete is withheld from a group whose latest read of that key
//     returned nothing (Directus sends every subscriber the keys); keys the
//     group never read are sent, as Directus does.
//   - Events carry "event_id" (the broker's event id); subscribe takes an
//     optional "since" to resume after one: init then carries no data and the
//     kept events after it are replayed. Events a subscriber could not be
//     given (a failed read, an expired token) are reported with
//     {"type":"notice","code":"EVENTS_MISSED",...} rather than Directus's
//     {"type":"subscribe","status":"error"}, which the SDK throws on.
//   - Errors always carry the request's uid when it had one.
//   - The answer to an auth frame comes before the answers to later frames,
//     and in handshake mode nothing (not even a ping) precedes it.
//   - A subscribe with an event filter still checks read access at once
//     (Directus answers init and fails later, at the first event).
//   - No first frame within realtime_auth_timeout is AUTH_TIMEOUT (Directus
//     says AUTH_FAILED).
//   - After TOKEN_EXPIRED the connection keeps its token until a new auth
//     or realtime_auth_timeout (Directus switches to the public role at once);
//     events in between are reported as missed.
//   - System collections (directus_*) are refused with INVALID_COLLECTION:
//     their events do not reach the broker. Errors from Directus keep its REST
//     codes: a collection the token may not read is FORBIDDEN (Directus's
//     websocket says INVALID_COLLECTION for an unknown one).
//   - The query option "meta" is not answered in subscriptions; items reads
//     pass through what the REST API answers. A delete by query answers
//     data null (the REST API does not name the deleted keys). An update
//     without id, ids or query is sent as a singleton update.
//   - Logins and refreshes are made by the broker (one IP for Directus's
//     rate limiter); the session cookie is accepted at the upgrade from
//     origins listed by name in allowed_origins.

// Auth modes, as Directus's WEBSOCKETS_REST_AUTH.
const (
	authPublic    = "public"
	authHandshake = "handshake"
	authStrict    = "strict"
)

// sessionCookie is the cookie Directus's session mode sets; Directus accepts
// it at the upgrade, and so does the broker (same-site deployments only).
const sessionCookie = "directus_session_token"

// realtimeUpgrade accepts a connection of the realtime protocol. A token in
// the request (Authorization, access_token, the session cookie) is checked
// now, as Directus does: an invalid one is a 401. Without one, strict mode
// refuses, handshake mode waits for an auth frame, public mode continues as
// the public role.
func (s *Server) realtimeUpgrade(c echo.Context) error {
	r := c.Request()
	token := requestToken(r)
	if token == "" && s.originListed(r) {
		// A cookie rides along with any page's request: it is a credential
		// only for origins listed by name (not "*"), or another site could
		// open a socket as the visitor.
		if ck, err := r.Cookie(sessionCookie); err == nil {
			token = ck.Value
		}
	}
	mode := s.cfg.RealtimeAuthMode
	refuse := ""
	if mode == authStrict {
		refuse = "a token is required (realtime_auth_mode is strict)"
	}
	rc := &realtimeConn{mode: mode, ops: make(chan func(context.Context), realtimeOpQueue)}
	rc.authed.Store(token != "" || mode != authHandshake)
	return s.accept(c, token, refuse, rc)
}

// realtimeOpQueue bounds the subscribe/unsubscribe frames waiting on one
// connection.
const realtimeOpQueue = 64

// realtimeConn is the realtime protocol's state of one connection.
type realtimeConn struct {
	mode string
	// authed is false until a handshake-mode connection sent a valid auth.
	authed atomic.Bool
	// spoke is set by the first frame: realtime_auth_timeout bounds the
	// wait for it (its validation is bounded by directus_timeout).
	spoke atomic.Bool
	// lastSeen is when the client last sent a frame (unix nanoseconds).
	lastSeen atomic.Int64
	// ops runs subscribe and unsubscribe frames one at a time in arrival
	// order: a repeated uid must replace, an unsubscribe must follow its
	// subscribe, and the SDK sends both in quick bursts after a reconnect.
	ops chan func(context.Context)
	// anon numbers the subscriptions without uid.
	anon atomic.Uint64
}

var _ protocol = (*realtimeConn)(nil)

func (r *realtimeConn) connected(c *client) {
	r.lastSeen.Store(time.Now().UnixNano())
	go r.runOps(c)
	go r.heartbeat(c)
}

// runOps runs the connection's subscribe and unsubscribe frames in order.
func (r *realtimeConn) runOps(c *client) {
	for {
		select {
		case op := <-r.ops:
			op(c.ctx)
		case <-c.ctx.Done():
			return
		}
	}
}

// enqueue queues op behind the connection's earlier (un)subscribe frames.
func (r *realtimeConn) enqueue(c *client, typ string, uid json.RawMessage, op func(context.Context)) {
	select {
	case r.ops <- op:
	default:
		c.Send(rtError(typ, "REQUESTS_EXCEEDED", "Too many subscribe and unsubscribe messages in flight on this connection.", uid))
	}
}

// heartbeat sends {"type":"ping"} every ping_period once the connection is
// authenticated, and closes a connection that sent nothing during a whole
// period after a ping (Directus: WEBSOCKETS_HEARTBEAT_PERIOD). In handshake
// mode it also enforces realtime_auth_timeout.
func (r *realtimeConn) heartbeat(c *client) {
	period := c.srv.cfg.PingPeriod
	tick := time.NewTicker(period)
	defer tick.Stop()
	var handshake <-chan time.Time
	if !r.authed.Load() {
		t := time.NewTimer(c.srv.cfg.RealtimeAuthTimeout)
		defer t.Stop()
		handshake = t.C
	}
	var pinged time.Time // zero: no ping outstanding
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-handshake:
			if !r.spoke.Load() {
				c.Send(rtError("auth", "AUTH_TIMEOUT", "Authentication timed out.", nil))
				r.closeAfterQueued(c, websocket.ClosePolicyViolation, "authentication timed out")
				return
			}
		case now := <-tick.C:
			if !r.authed.Load() {
				continue
			}
			if !pinged.IsZero() && r.lastSeen.Load() < pinged.UnixNano() {
				c.log.Debug().Msg("no frame since the last heartbeat ping; closing")
				r.closeAfterQueued(c, websocket.CloseNormalClosure, "no message since the last ping")
				return
			}
			pinged = now
			c.Send(rtPing)
		}
	}
}

var rtPing = []byte(`{"type":"ping"}`)

// closeAfterQueued closes the connection once the frames queued before have
// been written (an error frame must reach the client before the close).
func (r *realtimeConn) closeAfterQueued(c *client, code int, reason string) {
	if c.evicted.Load() {
		return
	}
	if err := c.session.CloseWithMsg(websocket.FormatCloseMessage(code, reason)); err != nil {
		c.evict(code, reason)
	}
}

// handleMessage handles one frame on the read loop. Cheap frames are
// answered at once; auth runs here too, so its answer precedes the answers
// to every later frame and later frames use the new token; subscribe and
// unsubscribe go to the ordered queue, items to a goroutine.
func (r *realtimeConn) handleMessage(c *client, msg []byte) {
	r.lastSeen.Store(time.Now().UnixNano())
	if !r.authed.Load() {
		r.spoke.Store(true)
		r.handshake(c, msg)
		return
	}
	if int64(len(msg)) > c.srv.cfg.MaxFrameSize {
		c.Send(rtError("server", "INVALID_PAYLOAD", "The message exceeds max_frame_size.", nil))
		return
	}
	f, perr := parseRealtimeFrame(msg)
	if perr != nil {
		c.Send(perr)
		return
	}
	if !c.limiter.Allow() {
		c.Send(rtError("server", "REQUESTS_EXCEEDED", "Too many messages, slow down.", nil))
		return
	}
	switch f.Type {
	case "auth":
		r.auth(c, f, false)
	case "ping":
		c.Send(rtPong(f.UID))
	case "pong":
		// The answer to our ping; lastSeen is all it is for.
	case "subscribe":
		r.enqueue(c, "subscribe", f.UID, func(ctx context.Context) { r.subscribe(ctx, c, f) })
	case "unsubscribe":
		r.enqueue(c, "unsubscribe", f.UID, func(context.Context) { r.unsubscribe(c, f) })
	case "items":
		r.async(c, f.UID, func(ctx context.Context) { r.items(ctx, c, f) })
	default:
		// Directus ignores unknown types (other handlers may want them).
	}
}

// handshake handles the first frame of a handshake-mode connection: it must
// be an auth frame with valid credentials, or the connection is closed.
func (r *realtimeConn) handshake(c *client, msg []byte) {
	f, perr := parseRealtimeFrame(msg)
	if perr != nil || f.Type != "auth" {
		c.Send(rtError("auth", "AUTH_FAILED", "Authentication handshake failed.", nil))
		r.closeAfterQueued(c, websocket.ClosePolicyViolation, "authentication failed")
		return
	}
	r.auth(c, f, true)
}

// auth authenticates the connection with the frame's credentials: an
// access_token, a refresh_token (exchanged at /auth/refresh) or an email and
// password (exchanged at /auth/login), in JSON mode. On success the
// connection and all its subscriptions switch to the new token. On failure a
// public-mode connection continues as the public role; others are closed.
func (r *realtimeConn) auth(c *client, f realtimeFrame, handshake bool) {
	uid := f.UID
	if handshake {
		uid = nil // Directus: the handshake answer carries no uid on failure
	}
	token, refresh, err := r.credentials(c.ctx, c, f)
	var id directus.Identity
	if err == nil {
		id, err = c.srv.auth.Validate(c.ctx, token)
	}
	if err != nil {
		code, msg := "AUTH_FAILED", "Authentication failed."
		if handshake {
			msg = "Authentication handshake failed."
		}
		if directus.Unavailable(err) {
			code, msg = "SERVICE_UNAVAILABLE", "Directus could not be reached or did not answer in time."
			c.log.Warn().Err(err).Msg("realtime auth: Directus unreachable")
		}
		c.Send(rtError("auth", code, msg, uid))
		if r.mode == authPublic {
			c.setToken("")
			c.watchExpiry(time.Time{})
			return
		}
		r.closeAfterQueued(c, websocket.ClosePolicyViolation, "authentication failed")
		return
	}
	c.setToken(token)
	c.watchExpiry(id.Expires)
	c.Send(rtAuthOK(f.UID, refresh))
	r.authed.Store(true)
}

// credentials returns the access token the frame carries or obtains, and
// the new refresh token when one was obtained.
func (r *realtimeConn) credentials(ctx context.Context, c *client, f realtimeFrame) (access, refresh string, err error) {
	var body map[string]any
	var path string
	switch {
	case f.Email != nil && f.Password != nil:
		path, body = "login", map[string]any{"email": *f.Email, "password": *f.Password, "mode": "json"}
		if f.OTP != nil {
			body["otp"] = *f.OTP
		}
	case f.RefreshToken != nil:
		path, body = "refresh", map[string]any{"refresh_token": *f.RefreshToken, "mode": "json"}
	}
	if path != "" {
		data, err := c.srv.directus.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"auth", path}, Body: body})
		if err != nil {
			return "", "", err
		}
		var tokens struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		_ = json.Unmarshal(data, &tokens)
		access, refresh = tokens.AccessToken, tokens.RefreshToken
	}
	// Directus: an access_token given alongside wins.
	if f.AccessToken != nil {
		access = *f.AccessToken
	}
	if access == "" {
		return "", "", errNoCredentials
	}
	return access, refresh, nil
}

var errNoCredentials = &apiError{Status: http.StatusUnauthorized, Code: "AUTH_FAILED", Message: "no credentials"}

// tokenExpiredFrame is Directus's TokenExpiredError as an auth error.
func (r *realtimeConn) tokenExpiredFrame() []byte {
	return rtError("auth", "TOKEN_EXPIRED", "Token expired.", nil)
}

func (r *realtimeConn) authGrace(c *client) time.Duration { return c.srv.cfg.RealtimeAuthTimeout }

// graceOver: no new token within realtime_auth_timeout. Public mode goes on
// as the public role; the others close, as Directus does.
func (r *realtimeConn) graceOver(c *client) {
	c.Send(rtError("auth", "AUTH_TIMEOUT", "Authentication timed out.", nil))
	if r.mode == authPublic {
		c.setToken("")
		return
	}
	r.closeAfterQueued(c, closeTokenExpired, "token expired")
}
