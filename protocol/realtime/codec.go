package realtime

import (
	"encoding/json"
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/protocol"
	"github.com/directus-ws-broker/directus-ws-broker/session"
	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// Directus's own realtime protocol (the one Directus serves at /websocket and
// the official @directus/sdk's realtime() speaks) on realtime_path.
// A connection's codec is a Codec: the operations, fan-out,
// permission filtering, token expiry and eviction are shared with the extension
// protocol (package session, package transport); only the framing and the
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

// Options are what the protocol's behaviour depends on (config's names in
// brackets).
type Options struct {
	// Mode is public, handshake or strict (realtime_auth_mode), as
	// Directus's WEBSOCKETS_REST_AUTH.
	Mode string
	// AuthTimeout bounds the wait for the first frame, and how long an
	// expired client may take to authenticate (realtime_auth_timeout).
	AuthTimeout  time.Duration
	PingPeriod   time.Duration // heartbeat (ping_period)
	MaxFrameSize int64         // (max_frame_size)
	// AllowedOrigins decides whether the session cookie is a credential
	// (allowed_origins: only origins named there).
	AllowedOrigins []string
}

// Endpoint serves the protocol at realtime_path.
type Endpoint struct{ Options Options }

// Open implements transport.Endpoint. A token in the request
// (Authorization, access_token, the session cookie) is checked at the
// upgrade, as Directus does: an invalid one is a 401. Without one, strict
// mode refuses, handshake mode waits for an auth frame, public mode
// continues as the public role.
func (e Endpoint) Open(r *http.Request) transport.Open {
	token := transport.RequestToken(r)
	if token == "" && transport.OriginListed(e.Options.AllowedOrigins, r) {
		// A cookie rides along with any page's request: it is a credential
		// only for origins listed by name (not "*"), or another site could
		// open a socket as the visitor.
		if ck, err := r.Cookie(sessionCookie); err == nil {
			token = ck.Value
		}
	}
	mode := e.Options.Mode
	refuse := ""
	if mode == authStrict {
		refuse = "a token is required (realtime_auth_mode is strict)"
	}
	rc := &Codec{opts: e.Options, mode: mode}
	rc.authed.Store(token != "" || mode != authHandshake)
	return transport.Open{Token: token, RefuseAnonymous: refuse, Codec: rc}
}

// Codec is the realtime protocol's state of one connection.
type Codec struct {
	opts Options
	c    transport.Link
	mode string
	// authed is false until a handshake-mode connection sent a valid auth.
	authed atomic.Bool
	// spoke is set by the first frame: realtime_auth_timeout bounds the
	// wait for it (its validation is bounded by directus_timeout).
	spoke atomic.Bool
	// lastSeen is when the client last sent a frame (unix nanoseconds).
	lastSeen atomic.Int64
}

var _ transport.Codec = (*Codec)(nil)

// Name implements transport.Codec.
func (r *Codec) Name() string { return "realtime" }

// Opened implements transport.Codec.
func (r *Codec) Opened(c transport.Link) {
	r.c = c
	r.lastSeen.Store(time.Now().UnixNano())
	go r.heartbeat(c)
}

// heartbeat sends {"type":"ping"} every ping_period once the connection is
// authenticated, and closes a connection that sent nothing during a whole
// period after a ping (Directus: WEBSOCKETS_HEARTBEAT_PERIOD). In handshake
// mode it also enforces realtime_auth_timeout.
func (r *Codec) heartbeat(c transport.Link) {
	ctx := c.Session().Context()
	period := r.opts.PingPeriod
	tick := time.NewTicker(period)
	defer tick.Stop()
	var handshake <-chan time.Time
	if !r.authed.Load() {
		t := time.NewTimer(r.opts.AuthTimeout)
		defer t.Stop()
		handshake = t.C
	}
	var pinged time.Time // zero: no ping outstanding
	for {
		select {
		case <-ctx.Done():
			return
		case <-handshake:
			if !r.spoke.Load() {
				// As Directus: the handshake failed, closed without a
				// status code (the client sees 1005).
				c.Send(rtHandshakeFailed)
				c.Close(0, "")
				return
			}
		case now := <-tick.C:
			if !r.authed.Load() {
				continue
			}
			if !pinged.IsZero() && r.lastSeen.Load() < pinged.UnixNano() {
				c.Log().Debug().Msg("no frame since the last heartbeat ping; closing")
				c.Close(0, "") // as Directus: no status code
				return
			}
			pinged = now
			c.Send(rtPing)
		}
	}
}

var rtPing = []byte(`{"type":"ping"}`)

// handle handles one frame. auth, subscribe and unsubscribe complete before
// the next frame is handled, so their answers come in frame order and later
// frames see their effect (a repeated uid replaces, an unsubscribe follows
// its subscribe, items use the new token); items requests start in order
// and run alongside.
func (r *Codec) Handle(c transport.Link, msg []byte) {
	r.lastSeen.Store(time.Now().UnixNano())
	if !r.authed.Load() {
		r.spoke.Store(true)
		r.handshake(c, msg)
		return
	}
	if c.Limited(func() []byte { return rtError("server", "REQUESTS_EXCEEDED", "Too many messages, slow down.", nil) }) {
		// Counted before parsing, so malformed frames are limited too.
		return
	}
	if int64(len(msg)) > r.opts.MaxFrameSize {
		c.Send(rtError("server", "INVALID_PAYLOAD", "The message exceeds max_frame_size.", nil))
		return
	}
	f, perr := parseFrame(msg)
	if perr != nil {
		c.Send(perr)
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
		r.subscribe(c, f)
	case "unsubscribe":
		r.unsubscribe(c, f)
	case "items":
		r.items(c, f)
	default:
		// Directus ignores unknown types (other handlers may want them).
	}
}

// rtHandshakeFailed is Directus's answer to any failed handshake: no auth
// frame in time, another frame first, or credentials it refuses.
var rtHandshakeFailed = rtError("auth", "AUTH_FAILED", "Authentication handshake failed.", nil)

// handshake handles the first frame of a handshake-mode connection: it must
// be an auth frame with valid credentials, or the connection is closed as
// Directus closes it (no status code).
func (r *Codec) handshake(c transport.Link, msg []byte) {
	f, perr := parseFrame(msg)
	if perr != nil || f.Type != "auth" {
		c.Send(rtHandshakeFailed)
		c.Close(0, "")
		return
	}
	r.auth(c, f, true)
}

// auth authenticates the connection with the frame's credentials: an
// access_token, a refresh_token (exchanged at /auth/refresh) or an email and
// password (exchanged at /auth/login). On success the connection and all
// its subscriptions switch to the new token. On failure a public-mode
// connection continues as the public role; others are closed.
func (r *Codec) auth(c transport.Link, f frame, handshake bool) {
	uid := f.UID
	if handshake {
		uid = nil // Directus: the handshake answer carries no uid on failure
	}
	ctx := c.Session().Context()
	var token, refresh string
	var err error
	if f.Email != nil || f.RefreshToken != nil {
		token, refresh, err = c.Session().Login(ctx, f.Email, f.Password, f.OTP, f.RefreshToken)
	}
	if f.AccessToken != nil {
		token, err = *f.AccessToken, nil // Directus: an access_token given alongside wins
	}
	if err == nil && token == "" {
		err = session.ErrNoCredentials
	}
	if err == nil {
		_, err = c.Session().Authenticate(ctx, token)
	}
	if err != nil {
		// Directus answers every failure alike; the cause is the broker's
		// to log (an unreachable Directus), not the client's to parse.
		msg := "Authentication failed."
		if handshake {
			msg = "Authentication handshake failed."
		}
		if directus.Unavailable(err) {
			c.Log().Warn().Err(err).Msg("realtime auth: Directus unreachable")
		}
		c.Send(rtError("auth", "AUTH_FAILED", msg, uid))
		if r.mode == authPublic {
			_, _ = c.Session().Authenticate(ctx, "")
			return
		}
		c.Close(0, "") // as Directus: no status code
		return
	}
	c.Send(rtAuthOK(f.UID, refresh))
	r.authed.Store(true)
}

// subscribeFrame is {"type":"subscribe","collection","query"?,"event"?,"item"?,"uid"?,"since"?}.
type subscribeFrame struct {
	Collection *string         `json:"collection"`
	Query      json.RawMessage `json:"query"`
	Event      *string         `json:"event"`
	Item       json.RawMessage `json:"item"`
	// Since resumes after a broker event id; EventIDs asks for each
	// event's id (additions to Directus: frames carry no id otherwise).
	Since    string `json:"since"`
	EventIDs bool   `json:"event_ids"`
}

// subscribe attaches a subscription. As in Directus, a subscription with
// the same uid is replaced (removed first, even if the new one fails), the
// answer is an init frame with the items the query selects (without data
// when an event filter is given), and errors are {"type":"subscribe"} frames.
func (r *Codec) subscribe(c transport.Link, f frame) {
	fail := func(err error) { c.Send(rtAPIError("subscribe", err, f.UID)) }
	var m subscribeFrame
	if err := json.Unmarshal(f.raw, &m); err != nil {
		fail(session.Invalid("Validation error: " + fieldTypeError(err)))
		return
	}
	if m.Collection == nil {
		fail(session.Invalid(`Validation error: "collection" must be a string.`))
		return
	}
	var actions broker.ActionSet
	if m.Event != nil {
		act := broker.Action(*m.Event)
		if !act.Valid() {
			fail(session.Invalid(`Validation error: "event" must be create, update or delete.`))
			return
		}
		actions = actions.With(act)
	}
	item := ""
	if protocol.HasValue(m.Item) {
		s, ok := session.UIDString(m.Item)
		if !ok || s == "" || s == "." || s == ".." {
			fail(session.Invalid(`Validation error: "item" must be a string or a number.`))
			return
		}
		item = s
	}
	var key string
	var uid json.RawMessage
	if len(f.UID) > 0 {
		s, _ := session.UIDString(f.UID)
		key, uid = session.KeyForUID(f.UID), mustJSON(s)
	} else {
		key = c.Session().NewKey()
	}
	ctx := c.Session().Context()
	_, err := c.Session().Subscribe(ctx, session.SubscribeRequest{
		Key: key, Collection: m.Collection, Query: m.Query, Actions: actions, UID: uid, Item: item,
		// An event filter or a resume: init carries no data (Directus
		// sends none with an event filter; a resume replays instead).
		Init: m.Event == nil && m.Since == "", Since: m.Since,
		// Event ids only when asked for (a resume implies it): Directus's
		// frames have none, and strict clients compare them whole.
		Encoder: Encoder{item: item, ids: m.EventIDs || m.Since != ""},
	})
	if err != nil && ctx.Err() == nil {
		fail(err)
	}
}

func mustJSON(v any) json.RawMessage { b, _ := json.Marshal(v); return b }

// unsubscribe removes the subscription with the frame's uid, or every
// subscription of the connection when there is none. Directus answers
// {"type":"subscription","event":"unsubscribe"} in both cases, also for a
// uid it does not know.
func (r *Codec) unsubscribe(c transport.Link, f frame) {
	if len(f.UID) > 0 {
		c.Session().Unsubscribe(session.KeyForUID(f.UID))
	} else {
		c.Session().UnsubscribeWhere(nil)
	}
	c.Send(rtSubscription("unsubscribe", nil, f.UID))
}

// itemsFrame is {"type":"items","action","collection","data"?,"id"?,"ids"?,"query"?,"uid"?}.
type itemsFrame struct {
	Collection *string           `json:"collection"`
	Action     string            `json:"action"`
	Data       json.RawMessage   `json:"data"`
	ID         json.RawMessage   `json:"id"`
	IDs        []json.RawMessage `json:"ids"`
	Query      json.RawMessage   `json:"query"`
}

// items forwards an items frame to the REST API with the connection's
// token and answers {"type":"items","data","meta"?,"uid"} or an error frame
// of type "items".
func (r *Codec) items(c transport.Link, f frame) {
	var m itemsFrame
	if err := json.Unmarshal(f.raw, &m); err != nil {
		c.Send(rtAPIError("items", session.Invalid("Validation error: "+fieldTypeError(err)), f.UID))
		return
	}
	if m.Collection == nil {
		c.Send(rtAPIError("items", session.Invalid(`Validation error: "collection" must be a string.`), f.UID))
		return
	}
	req := session.ItemsRequest{Action: m.Action, Collection: m.Collection, ID: m.ID, IDs: m.IDs, Query: m.Query, Data: m.Data}
	ctx := c.Session().Context()
	ok := c.Async(func() {
		res, err := c.Session().Items(ctx, req)
		if err != nil {
			if ctx.Err() == nil {
				c.Send(rtAPIError("items", err, f.UID))
			}
			return
		}
		c.Send(rtItems(res.Data, res.Meta, f.UID))
	})
	if !ok {
		c.Send(rtError("items", "REQUESTS_EXCEEDED", "Too many requests in flight on this connection.", f.UID))
	}
}

// fieldTypeError names the field of a JSON type error without Go's type
// names.
func fieldTypeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return `"` + te.Field + `" has the wrong type.`
	}
	return "the message does not have the documented shape."
}

// TokenExpired implements session.Protocol: Directus's TokenExpiredError as
// an auth error.
func (r *Codec) TokenExpired() []byte {
	return rtError("auth", "TOKEN_EXPIRED", "Token expired.", nil)
}

// AuthGrace implements session.Protocol.
func (r *Codec) AuthGrace() time.Duration { return r.opts.AuthTimeout }

// GraceOver implements session.Protocol: no new token within
// realtime_auth_timeout. Public mode goes on as the public role; the others
// close, as Directus does.
func (r *Codec) GraceOver(s *session.Session) {
	r.c.Send(rtError("auth", "AUTH_TIMEOUT", "Authentication timed out.", nil))
	if r.mode == authPublic {
		if _, err := s.Authenticate(s.Context(), ""); err == nil {
			return
		}
	}
	r.c.Close(0, "") // as Directus: no status code
}

// Dropped implements session.Protocol: a subscribe error with the
// subscription's uid, which ends the SDK's subscription loop.
func (r *Codec) Dropped(sub *broker.Subscription, err error) []byte {
	return rtAPIError("subscribe", err, sub.UID)
}
