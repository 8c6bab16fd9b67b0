package graphql

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/session"
	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// The graphql-transport-ws protocol as Directus 11 serves it
// (docs/research/directus-graphql-ws.md): connection_init →
// connection_ack, ping → pong, subscribe → next… or error, complete; the
// close codes of graphql-ws where Directus uses them. The operations are
// the session's, as for the other protocols: this codec only parses and
// encodes.
//
// Where the broker deliberately differs from Directus 11.17.4:
//   - Only subscription operations are served; a query or mutation sent
//     with subscribe gets an error message (Directus runs it).
//   - A syntax error gets an error message (Directus sends nothing).
//   - An expired token ends the connection's reads: {"type":"auth",
//     "status":"error","error":{"code":"TOKEN_EXPIRED"}} (Directus's own
//     frame type on this socket), then, without a new token within the
//     auth timeout, close 4403 (Directus never checks expiry here).
//   - event: $variable filters as a literal does; named fragments and
//     aliases inside data work (Directus drops or loses them).
//   - System collections (directus_*) have no _mutated field: their
//     events do not reach the broker.

// Close codes of graphql-ws (and Directus's 4403).
const (
	closeInvalidMessage = 4400
	closeUnauthorized   = 4401
	closeForbidden      = 4403
	closeInitTimeout    = 4408
	closeDuplicateID    = 4409
	closeTooManyInits   = 4429
)

// Auth modes, as Directus's WEBSOCKETS_GRAPHQL_AUTH.
const (
	authPublic    = "public"
	authHandshake = "handshake"
	authStrict    = "strict"
)

// SchemaSource builds the schema of what a token may read ("" the public
// role).
type SchemaSource interface {
	Schema(ctx context.Context, token string) (*Schema, error)
}

// Options are what the protocol's behaviour depends on.
type Options struct {
	Mode string // public, handshake or strict
	// InitTimeout bounds the wait for connection_init (graphql-ws's
	// connectionInitWaitTimeout: 3 s in Directus).
	InitTimeout time.Duration
	// AuthTimeout: a handshake-mode connection without a user by then is
	// closed 4403; an expired token's grace for a new one.
	AuthTimeout  time.Duration
	MaxFrameSize int64
	Schemas      SchemaSource
}

// Endpoint serves the protocol.
type Endpoint struct{ Options Options }

// Open implements transport.Endpoint: a token at the upgrade (access_token
// or the session cookie) is checked there, in every mode, as Directus
// does; strict mode requires one.
func (e Endpoint) Open(r *http.Request) transport.Open {
	token := transport.RequestToken(r)
	refuse := ""
	if e.Options.Mode == authStrict {
		refuse = "a token is required (the GraphQL endpoint's auth mode is strict)"
	}
	return transport.Open{Token: token, RefuseAnonymous: refuse, Codec: &Codec{opts: e.Options, authed: token != "" || e.Options.Mode != authHandshake}}
}

// Codec is one connection's protocol state. Frames are handled one at a
// time (transport), so the state needs its lock only against the timers.
type Codec struct {
	opts Options
	c    transport.Link

	mu     sync.Mutex
	authed bool            // handshake mode: a user authenticated
	inited bool            // connection_init handled
	acked  bool            // connection_ack sent
	subs   map[string]bool // active subscription ids
}

var (
	_ transport.Codec      = (*Codec)(nil)
	_ transport.MultiFrame = (*Codec)(nil)
)

// Name implements transport.Codec.
func (g *Codec) Name() string { return "graphql" }

// MultiFrame implements transport.MultiFrame: an event is a next per key.
func (g *Codec) MultiFrame() bool { return true }

// Opened implements transport.Codec: the init and (handshake) auth
// timers.
func (g *Codec) Opened(c transport.Link) {
	g.c = c
	g.subs = map[string]bool{}
	time.AfterFunc(g.opts.InitTimeout, func() {
		g.mu.Lock()
		late := !g.inited
		g.mu.Unlock()
		if late {
			c.Close(closeInitTimeout, "Connection initialisation timeout")
		}
	})
	if g.opts.Mode == authHandshake {
		time.AfterFunc(g.opts.AuthTimeout, func() {
			g.mu.Lock()
			late := !g.authed
			g.mu.Unlock()
			if late {
				c.Close(closeForbidden, "Forbidden")
			}
		})
	}
}

// message is a graphql-transport-ws message (and Directus's auth frame on
// this socket).
type message struct {
	Type    *string         `json:"type"`
	ID      json.RawMessage `json:"id"`
	Payload json.RawMessage `json:"payload"`
	// Directus's {"type":"auth","access_token"} re-authentication.
	AccessToken *string `json:"access_token"`
}

var invalidPayload = []byte(`{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Unable to parse the incoming message."}}`)

// Handle implements transport.Codec.
func (g *Codec) Handle(c transport.Link, msg []byte) {
	if c.Limited(func() []byte {
		return []byte(`{"type":"server","status":"error","error":{"code":"REQUESTS_EXCEEDED","message":"Too many messages, slow down."}}`)
	}) {
		return
	}
	var m message
	if int64(len(msg)) > g.opts.MaxFrameSize || json.Unmarshal(msg, &m) != nil || m.Type == nil {
		c.Send(invalidPayload) // as Directus: answered, not closed
		return
	}
	typ := *m.Type
	g.mu.Lock()
	authed := g.authed
	g.mu.Unlock()
	if !authed && typ != "connection_init" {
		c.Close(closeForbidden, "Forbidden")
		return
	}
	switch typ {
	case "connection_init":
		g.init(c, m)
	case "ping":
		if len(m.Payload) > 0 && string(m.Payload) != "null" {
			c.Send(append(append([]byte(`{"type":"pong","payload":`), m.Payload...), '}'))
		} else {
			c.Send([]byte(`{"type":"pong"}`))
		}
	case "pong", "next", "error", "connection_ack":
		// A client's pong; the others are the server's messages, which
		// graphql-ws refuses and Directus only logs.
	case "subscribe":
		g.subscribe(c, m)
	case "complete":
		id, ok := idOf(m.ID)
		if !ok {
			c.Close(closeInvalidMessage, "Invalid message received")
			return
		}
		g.mu.Lock()
		delete(g.subs, id)
		g.mu.Unlock()
		c.Session().Unsubscribe(subKey(id))
	case "auth":
		g.reauth(c, m)
	default:
		c.Close(closeInvalidMessage, "Invalid message received")
	}
}

// init handles connection_init: in handshake mode its payload's
// access_token authenticates the connection (none: 4403; refused: an auth
// error, and the init timeout closes 4408, as Directus).
func (g *Codec) init(c transport.Link, m message) {
	g.mu.Lock()
	again := g.inited
	g.mu.Unlock()
	if again {
		c.Close(closeTooManyInits, "Too many initialisation requests")
		return
	}
	if g.opts.Mode == authHandshake {
		var p struct {
			AccessToken *string `json:"access_token"`
		}
		if len(m.Payload) > 0 && string(m.Payload) != "null" && json.Unmarshal(m.Payload, &p) != nil {
			c.Send([]byte(`{"type":"error","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: the payload must be an object with a string access_token."}}`))
			return
		}
		g.mu.Lock()
		authed := g.authed
		g.mu.Unlock()
		if !authed {
			if p.AccessToken == nil {
				c.Close(closeForbidden, "Forbidden")
				return
			}
			if _, err := c.Session().Authenticate(c.Session().Context(), *p.AccessToken); err != nil {
				c.Send(authFailed)
				return
			}
		}
	}
	g.mu.Lock()
	g.authed, g.inited, g.acked = true, true, true
	g.mu.Unlock()
	c.Send([]byte(`{"type":"connection_ack"}`))
}

var authFailed = []byte(`{"type":"auth","status":"error","error":{"code":"AUTH_FAILED","message":"Authentication failed."}}`)

// reauth is Directus's {"type":"auth","access_token"} on this socket: the
// connection and its subscriptions switch to the new token; a refused one
// closes the connection (public mode: continues as the public role).
func (g *Codec) reauth(c transport.Link, m message) {
	ctx := c.Session().Context()
	if m.AccessToken != nil {
		if _, err := c.Session().Authenticate(ctx, *m.AccessToken); err == nil {
			c.Send([]byte(`{"type":"auth","status":"ok"}`))
			return
		}
	}
	c.Send(authFailed)
	if g.opts.Mode == authPublic {
		// Not Directus's null accountability (its admin schema): the
		// public role.
		_, _ = c.Session().Authenticate(ctx, "")
		return
	}
	c.Close(0, "")
}

// subscribePayload is a subscribe message's payload.
type subscribePayload struct {
	Query         *string        `json:"query"`
	Variables     map[string]any `json:"variables"`
	OperationName *string        `json:"operationName"`
}

// subscribe validates the document against the token's schema and
// attaches the subscription: the read's fields are the data selection's,
// so permission filtering, access classes and the failing-closed rules are
// those of every other subscription.
func (g *Codec) subscribe(c transport.Link, m message) {
	g.mu.Lock()
	acked := g.acked
	g.mu.Unlock()
	if !acked {
		c.Close(closeUnauthorized, "Unauthorized")
		return
	}
	id, ok := idOf(m.ID)
	var p subscribePayload
	if ok && json.Unmarshal(m.Payload, &p) != nil {
		ok = false
	}
	if !ok || p.Query == nil {
		c.Close(closeInvalidMessage, "Invalid message received")
		return
	}
	g.mu.Lock()
	dup := g.subs[id]
	if !dup {
		g.subs[id] = true // reserved before any wait, as graphql-ws
	}
	g.mu.Unlock()
	if dup {
		c.Close(closeDuplicateID, "Subscriber for "+id+" already exists")
		return
	}
	fail := func(errs any) {
		g.mu.Lock()
		delete(g.subs, id)
		g.mu.Unlock()
		c.Send(errorMessage(id, errs))
	}
	ctx := c.Session().Context()
	schema, err := g.opts.Schemas.Schema(ctx, c.Session().Token())
	if err != nil {
		fail(gqlerror.List{apiError(err)})
		return
	}
	op := ""
	if p.OperationName != nil {
		op = *p.OperationName
	}
	sub, errs := schema.Parse(*p.Query, p.Variables, op)
	if len(errs) > 0 {
		fail(errs)
		return
	}
	var actions broker.ActionSet
	if sub.Event != "" {
		actions = actions.With(broker.Action(sub.Event))
	}
	fields := sub.Fields
	if len(fields) == 0 {
		fields = []string{"*"} // data not selected: the read still gates the event, as Directus's
	}
	query, _ := json.Marshal(map[string]any{"fields": fields})
	coll := sub.Collection
	if _, err := c.Session().Subscribe(ctx, session.SubscribeRequest{
		Key: subKey(id), Collection: &coll, Query: query, Actions: actions, Encoder: encoder{id: id, sub: sub},
	}); err != nil && ctx.Err() == nil {
		fail(gqlerror.List{apiError(err)})
	}
}

// apiError is a session error as a GraphQL error, its code in the
// extensions (as Directus's GraphQL errors carry it).
func apiError(err error) *gqlerror.Error {
	ae := session.AsError(err)
	return &gqlerror.Error{Message: ae.Message, Extensions: map[string]any{"code": ae.Code}}
}

// idOf is a message's id: a non-empty string.
func idOf(raw json.RawMessage) (string, bool) {
	var id string
	if json.Unmarshal(raw, &id) != nil || id == "" {
		return "", false
	}
	return id, true
}

func subKey(id string) string { return "g:" + id }

// TokenExpired implements session.Protocol.
func (g *Codec) TokenExpired() []byte {
	return []byte(`{"type":"auth","status":"error","error":{"code":"TOKEN_EXPIRED","message":"Token expired."}}`)
}

// AuthGrace implements session.Protocol.
func (g *Codec) AuthGrace() time.Duration { return g.opts.AuthTimeout }

// GraceOver implements session.Protocol: no new token in time. Public mode
// goes on as the public role; the others close 4403.
func (g *Codec) GraceOver(s *session.Session) {
	if g.opts.Mode == authPublic {
		if _, err := s.Authenticate(s.Context(), ""); err == nil {
			return
		}
	}
	g.c.Close(closeForbidden, "Forbidden")
}

// Dropped implements session.Protocol: the subscription's error message.
func (g *Codec) Dropped(sub *broker.Subscription, err error) []byte {
	id := ""
	if e, ok := sub.Encoder.(encoder); ok {
		id = e.id
		g.mu.Lock()
		delete(g.subs, id)
		g.mu.Unlock()
	}
	return errorMessage(id, gqlerror.List{apiError(err)})
}
