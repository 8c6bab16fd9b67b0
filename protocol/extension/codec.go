package extension

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/protocol"
	"github.com/directus-ws-broker/directus-ws-broker/session"
	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// Options are what the protocol's behaviour depends on (config's names in
// brackets).
type Options struct {
	MaxFrameSize int64 // (max_frame_size)
	// Which frames are served (websocket_core_get, _post, _patch, _delete,
	// _subscribe).
	Get, Post, Patch, Delete, Subscribe bool
	// AuthGrace is how long an expired client may take to send a new token
	// (auth_grace).
	AuthGrace time.Duration
	// Public lets clients without a token in as the public role
	// (websocket_public).
	Public bool
}

// Endpoint serves the protocol at websocket_path.
type Endpoint struct{ Options Options }

// Open implements transport.Endpoint: the token of the request, refused
// without one unless public access is on.
func (e Endpoint) Open(r *http.Request) transport.Open {
	refuse := ""
	if !e.Options.Public {
		refuse = "a token is required (websocket_public is off)"
	}
	return transport.Open{Token: transport.RequestToken(r), RefuseAnonymous: refuse, Codec: &Codec{opts: e.Options}}
}

// Codec speaks the protocol of the Directus "websocket subscribe"
// extension at websocket_path: frames
// {"type":"get|post|patch|delete|subscribe|unsubscribe|auth|ping"}, answers
// RESPONSE, SUBSCRIBED, SUBSCRIPTION, ERROR... (frames.go). One codec per
// connection.
type Codec struct {
	opts Options
	c    transport.Link
}

var _ transport.Codec = (*Codec)(nil)

// Name implements transport.Codec.
func (p *Codec) Name() string { return "extension" }

// Opened implements transport.Codec.
func (p *Codec) Opened(c transport.Link) { p.c = c }

// Handle implements transport.Codec: it runs one frame: state changes (subscribe, unsubscribe, auth)
// complete before the next frame is handled; items requests start in order
// and run alongside, bounded by max_in_flight.
func (p *Codec) Handle(c transport.Link, msg []byte) {
	if c.Limited(func() []byte {
		return errorFrame(&session.Error{Status: 429, Code: "RATE_LIMITED", Message: "too many frames; slow down (frames over the rate are dropped)"}, nil, "")
	}) {
		// Counted before parsing, so malformed frames are limited too; the
		// answer carries no uid (that would mean parsing the flood).
		return
	}
	if int64(len(msg)) > p.opts.MaxFrameSize {
		f, _ := parseFrame(msg)
		c.Send(errorFrame(&session.Error{Status: 413, Code: "FRAME_TOO_LARGE", Message: "frame exceeds max_frame_size"}, f.UID, ""))
		return
	}
	f, perr := parseFrame(msg)
	if perr != nil {
		c.Send(errorFrame(perr, f.UID, ""))
		return
	}
	o := p.opts
	switch f.Type {
	case "get", "post", "patch", "delete":
		enabled := map[string]bool{"get": o.Get, "post": o.Post, "patch": o.Patch, "delete": o.Delete}
		if !enabled[f.Type] {
			c.Send(errorFrame(&session.Error{Status: 403, Code: "FORBIDDEN", Message: f.Type + " frames are disabled on this broker"}, f.UID, ""))
			return
		}
		p.items(c, f)
	case "subscribe":
		if !o.Subscribe {
			c.Send(errorFrame(&session.Error{Status: 403, Code: "FORBIDDEN", Message: "subscribe frames are disabled on this broker"}, f.UID, ""))
			return
		}
		p.subscribe(c, f)
	case "unsubscribe":
		p.unsubscribe(c, f)
	case "auth":
		p.auth(c, f)
	case "ping":
		c.Send(typed("PONG", nil, f.UID))
	default:
		c.Send(errorFrame(session.Invalid("unknown type "+quote(f.Type)+": use get, post, patch, delete, subscribe, unsubscribe, auth or ping"), f.UID, ""))
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// itemActions maps the frame types to the items actions.
var itemActions = map[string]string{"get": "read", "post": "create", "patch": "update", "delete": "delete"}

// items forwards a get/post/patch/delete to the REST API.
func (p *Codec) items(c transport.Link, f frame) {
	req := session.ItemsRequest{Action: itemActions[f.Type], Collection: f.Collection, ID: f.ID, IDs: f.IDs, Query: f.Query, Data: f.Data}
	switch {
	case f.Type == "post" && !isObjectOrArray(f.Data):
		c.Send(errorFrame(session.Invalid(`"data" must be an object or an array of objects`), f.UID, ""))
		return
	case f.Type == "delete" && len(f.IDs) == 0 && !protocol.HasValue(f.ID):
		c.Send(errorFrame(session.Invalid(`"id" or "ids" missing`), f.UID, ""))
		return
	case f.Type == "delete":
		req.Query = nil // the extension protocol deletes by key only
	}
	ctx := c.Session().Context()
	ok := c.Async(func() {
		res, err := c.Session().Items(ctx, req)
		if err != nil {
			if ctx.Err() == nil {
				c.Send(errorFrame(session.AsError(err), f.UID, ""))
			}
			return
		}
		data := res.Data
		if f.Type == "delete" && protocol.HasValue(f.ID) && len(f.IDs) == 0 {
			data = append(append(json.RawMessage("["), f.ID...), ']') // the extension answers a list
		}
		c.Send(response(data, f.UID))
	})
	if !ok {
		c.Send(errorFrame(&session.Error{Status: 429, Code: "RATE_LIMITED", Message: "too many requests in flight on this connection"}, f.UID, ""))
	}
}

// subscribe attaches a subscription: one per uid, or one per collection
// for frames without uid.
func (p *Codec) subscribe(c transport.Link, f frame) {
	actions, aerr := f.actions()
	if aerr != nil {
		c.Send(errorFrame(aerr, f.UID, collectionOf(f)))
		return
	}
	key := session.KeyForCollection(collectionOf(f))
	if len(f.UID) > 0 {
		key = session.KeyForUID(f.UID)
	}
	_, err := c.Session().Subscribe(c.Session().Context(), session.SubscribeRequest{
		Key: key, Collection: f.Collection, Query: f.Query, Actions: actions, UID: f.UID,
		Init: f.Init, Since: f.Since, Encoder: Encoder{},
	})
	if err != nil && c.Session().Context().Err() == nil {
		c.Send(errorFrame(session.AsError(err), f.UID, collectionOf(f)))
	}
}

func collectionOf(f frame) string {
	if f.Collection == nil {
		return ""
	}
	return *f.Collection
}

// unsubscribe removes the subscription with the frame's uid, or every
// subscription of its collection.
func (p *Codec) unsubscribe(c transport.Link, f frame) {
	var removed []*broker.Subscription
	if len(f.UID) > 0 {
		if sub, ok := c.Session().Unsubscribe(session.KeyForUID(f.UID)); ok {
			removed = append(removed, sub)
		}
	}
	if len(removed) == 0 && f.Collection != nil {
		coll := *f.Collection
		removed = c.Session().UnsubscribeWhere(func(s *broker.Subscription) bool { return s.Collection == coll })
	}
	if len(removed) == 0 {
		c.Send(errorFrame(&session.Error{Status: 404, Code: "NOT_SUBSCRIBED", Message: "no subscription with this uid or collection"}, f.UID, ""))
		return
	}
	c.Send(typed("UNSUBSCRIBED", map[string]any{"collection": removed[0].Collection}, f.UID))
}

// auth replaces the connection's token without dropping its subscriptions.
func (p *Codec) auth(c transport.Link, f frame) {
	if f.AccessToken == "" {
		c.Send(errorFrame(session.Invalid(`"access_token" missing`), f.UID, ""))
		return
	}
	if _, err := c.Session().Authenticate(c.Session().Context(), f.AccessToken); err != nil {
		ae := session.AsError(err)
		if ae.Status != http.StatusServiceUnavailable {
			ae = session.ErrInvalidCredentials
		}
		c.Send(errorFrame(ae, f.UID, ""))
		return
	}
	c.Send(typed("AUTH", map[string]any{"status": "ok"}, f.UID))
}

// TokenExpired implements session.Protocol.
func (p *Codec) TokenExpired() []byte {
	return errorFrame(&session.Error{Status: 401, Code: "TOKEN_EXPIRED",
		Message: "token expired: send {\"type\":\"auth\",\"access_token\":\"...\"} to continue"}, nil, "")
}

// AuthGrace implements session.Protocol.
func (p *Codec) AuthGrace() time.Duration { return p.opts.AuthGrace }

// GraceOver implements session.Protocol: the connection closes (4001), or
// continues as the public role when public access is on.
func (p *Codec) GraceOver(s *session.Session) {
	if p.opts.Public {
		if _, err := s.Authenticate(s.Context(), ""); err == nil {
			p.c.Send(typed("AUTH", map[string]any{"status": "public", "message": "token expired; continuing as the public role"}, nil))
			return
		}
	}
	p.c.Close(transport.CloseTokenExpired, "token expired")
}

// Dropped implements session.Protocol.
func (p *Codec) Dropped(sub *broker.Subscription, err error) []byte {
	return errorFrame(session.AsError(err), sub.UID, sub.Collection)
}

func isObjectOrArray(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '{' || raw[0] == '[')
}
