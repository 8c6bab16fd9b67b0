package handlers

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/session"
)

// seedCodec speaks the protocol of the original Directus "websocket
// subscribe" extension (the seed this broker grew from) at websocket_path:
// frames {"type":"get|post|patch|delete|subscribe|unsubscribe|auth|ping"},
// answers RESPONSE, SUBSCRIBED, SUBSCRIPTION, ERROR... (seed_frames.go).
// One codec per connection.
type seedCodec struct {
	c *conn
}

var _ codec = (*seedCodec)(nil)

func (p *seedCodec) opened(c *conn) { p.c = c }

// handle runs one frame: state changes (subscribe, unsubscribe, auth)
// complete before the next frame is handled; items requests start in order
// and run alongside, bounded by max_in_flight.
func (p *seedCodec) handle(c *conn, msg []byte) {
	if c.limited(func() []byte {
		return seedError(&session.Error{Status: 429, Code: "RATE_LIMITED", Message: "too many frames; slow down (frames over the rate are dropped)"}, nil, "")
	}) {
		// Counted before parsing, so malformed frames are limited too; the
		// answer carries no uid (that would mean parsing the flood).
		return
	}
	if int64(len(msg)) > c.srv.cfg.MaxFrameSize {
		f, _ := parseSeedFrame(msg)
		c.Send(seedError(&session.Error{Status: 413, Code: "FRAME_TOO_LARGE", Message: "frame exceeds max_frame_size"}, f.UID, ""))
		return
	}
	f, perr := parseSeedFrame(msg)
	if perr != nil {
		c.Send(seedError(perr, f.UID, ""))
		return
	}
	cfg := c.srv.cfg
	switch f.Type {
	case "get", "post", "patch", "delete":
		enabled := map[string]bool{"get": cfg.WebsocketCoreGet, "post": cfg.WebsocketCorePost, "patch": cfg.WebsocketCorePatch, "delete": cfg.WebsocketCoreDelete}
		if !enabled[f.Type] {
			c.Send(seedError(&session.Error{Status: 403, Code: "FORBIDDEN", Message: f.Type + " frames are disabled on this broker"}, f.UID, ""))
			return
		}
		p.items(c, f)
	case "subscribe":
		if !cfg.WebsocketCoreSubscribe {
			c.Send(seedError(&session.Error{Status: 403, Code: "FORBIDDEN", Message: "subscribe frames are disabled on this broker"}, f.UID, ""))
			return
		}
		p.subscribe(c, f)
	case "unsubscribe":
		p.unsubscribe(c, f)
	case "auth":
		p.auth(c, f)
	case "ping":
		c.Send(seedTyped("PONG", nil, f.UID))
	default:
		c.Send(seedError(session.Invalid("unknown type "+quote(f.Type)+": use get, post, patch, delete, subscribe, unsubscribe, auth or ping"), f.UID, ""))
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// seedActions maps the frame types to the items actions.
var seedActions = map[string]string{"get": "read", "post": "create", "patch": "update", "delete": "delete"}

// items forwards a get/post/patch/delete to the REST API.
func (p *seedCodec) items(c *conn, f seedFrame) {
	req := session.ItemsRequest{Action: seedActions[f.Type], Collection: f.Collection, ID: f.ID, IDs: f.IDs, Query: f.Query, Data: f.Data}
	switch {
	case f.Type == "post" && !isObjectOrArray(f.Data):
		c.Send(seedError(session.Invalid(`"data" must be an object or an array of objects`), f.UID, ""))
		return
	case f.Type == "delete" && len(f.IDs) == 0 && !hasValue(f.ID):
		c.Send(seedError(session.Invalid(`"id" or "ids" missing`), f.UID, ""))
		return
	case f.Type == "delete":
		req.Query = nil // the seed protocol deletes by key only
	}
	ctx := c.sess.Context()
	ok := c.async(func() {
		res, err := c.sess.Items(ctx, req)
		if err != nil {
			if ctx.Err() == nil {
				c.Send(seedError(session.AsError(err), f.UID, ""))
			}
			return
		}
		data := res.Data
		if f.Type == "delete" && hasValue(f.ID) && len(f.IDs) == 0 {
			data = append(append(json.RawMessage("["), f.ID...), ']') // the seed answers a list
		}
		c.Send(seedResponse(data, f.UID))
	})
	if !ok {
		c.Send(seedError(&session.Error{Status: 429, Code: "RATE_LIMITED", Message: "too many requests in flight on this connection"}, f.UID, ""))
	}
}

// subscribe attaches a subscription: one per uid, or one per collection
// for frames without uid.
func (p *seedCodec) subscribe(c *conn, f seedFrame) {
	actions, aerr := f.actions()
	if aerr != nil {
		c.Send(seedError(aerr, f.UID, collectionOf(f)))
		return
	}
	key := session.KeyForCollection(collectionOf(f))
	if len(f.UID) > 0 {
		key = session.KeyForUID(f.UID)
	}
	_, err := c.sess.Subscribe(c.sess.Context(), session.SubscribeRequest{
		Key: key, Collection: f.Collection, Query: f.Query, Actions: actions, UID: f.UID,
		Init: f.Init, Since: f.Since, Encoder: seedEncoder{},
	})
	if err != nil && c.sess.Context().Err() == nil {
		c.Send(seedError(session.AsError(err), f.UID, collectionOf(f)))
	}
}

func collectionOf(f seedFrame) string {
	if f.Collection == nil {
		return ""
	}
	return *f.Collection
}

// unsubscribe removes the subscription with the frame's uid, or every
// subscription of its collection.
func (p *seedCodec) unsubscribe(c *conn, f seedFrame) {
	var removed []*broker.Subscription
	if len(f.UID) > 0 {
		if sub, ok := c.sess.Unsubscribe(session.KeyForUID(f.UID)); ok {
			removed = append(removed, sub)
		}
	}
	if len(removed) == 0 && f.Collection != nil {
		coll := *f.Collection
		removed = c.sess.UnsubscribeWhere(func(s *broker.Subscription) bool { return s.Collection == coll })
	}
	if len(removed) == 0 {
		c.Send(seedError(&session.Error{Status: 404, Code: "NOT_SUBSCRIBED", Message: "no subscription with this uid or collection"}, f.UID, ""))
		return
	}
	c.Send(seedTyped("UNSUBSCRIBED", map[string]any{"collection": removed[0].Collection}, f.UID))
}

// auth replaces the connection's token without dropping its subscriptions.
func (p *seedCodec) auth(c *conn, f seedFrame) {
	if f.AccessToken == "" {
		c.Send(seedError(session.Invalid(`"access_token" missing`), f.UID, ""))
		return
	}
	if _, err := c.sess.Authenticate(c.sess.Context(), f.AccessToken); err != nil {
		ae := session.AsError(err)
		if ae.Status != http.StatusServiceUnavailable {
			ae = session.ErrInvalidCredentials
		}
		c.Send(seedError(ae, f.UID, ""))
		return
	}
	c.Send(seedTyped("AUTH", map[string]any{"status": "ok"}, f.UID))
}

// TokenExpired implements session.Protocol.
func (p *seedCodec) TokenExpired() []byte {
	return seedError(&session.Error{Status: 401, Code: "TOKEN_EXPIRED",
		Message: "token expired: send {\"type\":\"auth\",\"access_token\":\"...\"} to continue"}, nil, "")
}

// AuthGrace implements session.Protocol.
func (p *seedCodec) AuthGrace() time.Duration { return p.c.srv.cfg.AuthGrace }

// GraceOver implements session.Protocol: the connection closes (4001), or
// continues as the public role when public access is on.
func (p *seedCodec) GraceOver(s *session.Session) {
	if p.c.srv.cfg.WebsocketPublic {
		if _, err := s.Authenticate(s.Context(), ""); err == nil {
			p.c.Send(seedTyped("AUTH", map[string]any{"status": "public", "message": "token expired; continuing as the public role"}, nil))
			return
		}
	}
	p.c.Close(closeTokenExpired, "token expired")
}

// Dropped implements session.Protocol.
func (p *seedCodec) Dropped(sub *broker.Subscription, err error) []byte {
	return seedError(session.AsError(err), sub.UID, sub.Collection)
}

func isObjectOrArray(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '{' || raw[0] == '[')
}

func hasValue(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }
