package handlers

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// maxSubscriptions bounds the subscriptions of one connection.
const maxSubscriptions = 256

// handleMessage runs on the connection's read loop: it answers what is cheap
// at once and hands every Directus call to a goroutine, so a slow Directus
// never stalls reads (or pongs).
func (c *client) handleMessage(msg []byte) {
	if int64(len(msg)) > c.srv.cfg.MaxFrameSize {
		f, _ := parseFrame(msg)
		c.Send(errorFrame(&apiError{Status: 413, Code: "FRAME_TOO_LARGE", Message: "frame exceeds max_frame_size"}, f.UID))
		return
	}
	f, perr := parseFrame(msg)
	if perr != nil {
		c.Send(errorFrame(perr, f.UID))
		return
	}
	if !c.limiter.Allow() {
		c.Send(errorFrame(&apiError{Status: 429, Code: "RATE_LIMITED", Message: "too many frames; slow down"}, f.UID))
		return
	}
	cfg := c.srv.cfg
	var run func(context.Context, frame) (json.RawMessage, error)
	enabled := true
	switch f.Type {
	case "get":
		run, enabled = c.get, cfg.WebsocketCoreGet
	case "post":
		run, enabled = c.post, cfg.WebsocketCorePost
	case "patch":
		run, enabled = c.patch, cfg.WebsocketCorePatch
	case "delete":
		run, enabled = c.delete, cfg.WebsocketCoreDelete
	case "subscribe":
		if !cfg.WebsocketCoreSubscribe {
			enabled = false
			break
		}
		c.async(f, func(ctx context.Context) { c.subscribe(ctx, f) })
		return
	case "unsubscribe":
		c.unsubscribe(f)
		return
	case "auth":
		c.async(f, func(ctx context.Context) { c.auth(ctx, f) })
		return
	case "ping":
		c.Send(typedFrame("PONG", nil, f.UID))
		return
	default:
		c.Send(errorFrame(badRequest("unknown type "+quote(f.Type)+": use get, post, patch, delete, subscribe, unsubscribe, auth or ping"), f.UID))
		return
	}
	if !enabled {
		c.Send(errorFrame(&apiError{Status: 403, Code: "FORBIDDEN", Message: f.Type + " frames are disabled on this broker"}, f.UID))
		return
	}
	c.async(f, func(ctx context.Context) {
		data, err := run(ctx, f)
		if err != nil {
			c.Send(errorFrame(toAPIError(err), f.UID))
			return
		}
		c.Send(responseFrame(data, f.UID))
	})
}

// async runs fn off the read loop, bounded by max_in_flight per connection.
func (c *client) async(f frame, fn func(context.Context)) {
	select {
	case c.inflight <- struct{}{}:
	default:
		c.Send(errorFrame(&apiError{Status: 429, Code: "RATE_LIMITED", Message: "too many requests in flight on this connection"}, f.UID))
		return
	}
	go func() {
		defer func() { <-c.inflight }()
		fn(c.ctx)
	}()
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// request builds a Directus request for the collection of f.
func (c *client) request(f frame, method string, id bool) (directus.Request, error) {
	coll, err := f.collection()
	if err != nil {
		return directus.Request{}, err
	}
	q, err := f.query()
	if err != nil {
		return directus.Request{}, err
	}
	params, qerr := directus.QueryValues(q)
	if qerr != nil {
		return directus.Request{}, badRequest(qerr.Error())
	}
	r := directus.Request{Method: method, Segments: []string{"items", coll}, Query: params, Token: c.Token()}
	if id && len(f.ID) > 0 && string(f.ID) != "null" {
		key, err := itemID(f.ID)
		if err != nil {
			return directus.Request{}, err
		}
		r.Segments = append(r.Segments, key)
	}
	return r, nil
}

func (c *client) get(ctx context.Context, f frame) (json.RawMessage, error) {
	r, err := c.request(f, http.MethodGet, true)
	if err != nil {
		return nil, err
	}
	return c.srv.directus.Do(ctx, r)
}

func (c *client) post(ctx context.Context, f frame) (json.RawMessage, error) {
	r, err := c.request(f, http.MethodPost, false)
	if err != nil {
		return nil, err
	}
	if len(f.Data) == 0 || (f.Data[0] != '{' && f.Data[0] != '[') {
		return nil, badRequest(`"data" must be an object or an array of objects`)
	}
	r.Body = f.Data
	return c.srv.directus.Do(ctx, r)
}

func (c *client) patch(ctx context.Context, f frame) (json.RawMessage, error) {
	r, err := c.request(f, http.MethodPatch, true)
	if err != nil {
		return nil, err
	}
	if len(f.Data) == 0 || f.Data[0] != '{' {
		return nil, badRequest(`"data" must be an object`)
	}
	switch {
	case len(f.IDs) > 0:
		keys, err := itemIDs(f.IDs)
		if err != nil {
			return nil, err
		}
		r.Body = map[string]any{"keys": keys, "data": f.Data}
	default:
		// With an id: that item; without: a singleton.
		r.Body = f.Data
	}
	return c.srv.directus.Do(ctx, r)
}

func (c *client) delete(ctx context.Context, f frame) (json.RawMessage, error) {
	r, err := c.request(f, http.MethodDelete, true)
	if err != nil {
		return nil, err
	}
	var answer json.RawMessage
	switch {
	case len(f.IDs) > 0:
		keys, err := itemIDs(f.IDs)
		if err != nil {
			return nil, err
		}
		r.Body = keys
		answer, _ = json.Marshal(f.IDs)
	case len(f.ID) > 0 && string(f.ID) != "null":
		answer = append(append(json.RawMessage("["), f.ID...), ']')
	default:
		return nil, badRequest(`"id" or "ids" missing`)
	}
	if _, err := c.srv.directus.Do(ctx, r); err != nil {
		return nil, err
	}
	return answer, nil
}

// itemIDs checks ids and keeps them as JSON values, numbers as numbers.
func itemIDs(raw []json.RawMessage) ([]json.RawMessage, error) {
	for _, id := range raw {
		if _, err := itemID(id); err != nil {
			return nil, err
		}
	}
	return raw, nil
}

// subscribe checks with Directus that the token may read the collection
// (with the subscription's query), then attaches the subscription.
func (c *client) subscribe(ctx context.Context, f frame) {
	fail := func(err error) { c.Send(errorFrame(toAPIError(err), f.UID)) }
	coll, aerr := f.collection()
	if aerr != nil {
		fail(aerr)
		return
	}
	q, aerr := f.query()
	if aerr != nil {
		fail(aerr)
		return
	}
	actions, aerr := f.actions()
	if aerr != nil {
		fail(aerr)
		return
	}
	if f.Since != "" && !broker.ValidID(f.Since) {
		fail(badRequest(`"since" must be an event id ("<ms>-<seq>") from an earlier event`))
		return
	}
	token := c.Token()
	if !f.Init {
		if err := c.checkRead(ctx, token, coll, q); err != nil {
			fail(err)
			return
		}
	}
	key := subKey(f.UID, coll)
	c.mu.Lock()
	old := c.subs[key]
	if old == nil && len(c.subs) >= maxSubscriptions {
		c.mu.Unlock()
		fail(&apiError{Status: 429, Code: "LIMIT_EXCEEDED", Message: "too many subscriptions on this connection"})
		return
	}
	c.mu.Unlock()
	if old != nil {
		c.srv.broker.Unsubscribe(old)
	}
	s := broker.NewSubscription(coll, token, q, actions, f.UID, c, legacyEncoder{})
	ack := typedFrame("SUBSCRIBED", map[string]any{"collection": coll}, f.UID)
	if err := c.attach(ctx, key, s, broker.AttachOptions{Init: f.Init, Since: f.Since, Ack: ack}); err != nil {
		fail(err)
	}
}

// unsubscribe removes the subscription with the frame's uid, or every
// subscription of its collection.
func (c *client) unsubscribe(f frame) {
	var removed []*broker.Subscription
	c.mu.Lock()
	if len(f.UID) > 0 {
		if s := c.subs[subKey(f.UID, "")]; s != nil {
			removed = append(removed, s)
			delete(c.subs, subKey(f.UID, ""))
		}
	}
	if len(removed) == 0 && f.Collection != nil {
		for k, s := range c.subs {
			if s.Collection == *f.Collection {
				removed = append(removed, s)
				delete(c.subs, k)
			}
		}
	}
	c.mu.Unlock()
	if len(removed) == 0 {
		c.Send(errorFrame(&apiError{Status: 404, Code: "NOT_SUBSCRIBED", Message: "no subscription with this uid or collection"}, f.UID))
		return
	}
	for _, s := range removed {
		c.srv.broker.Unsubscribe(s)
	}
	c.Send(typedFrame("UNSUBSCRIBED", map[string]any{"collection": removed[0].Collection}, f.UID))
}

// auth replaces the connection's token without dropping its subscriptions.
func (c *client) auth(ctx context.Context, f frame) {
	if f.AccessToken == "" {
		c.Send(errorFrame(badRequest(`"access_token" missing`), f.UID))
		return
	}
	id, err := c.srv.auth.Validate(ctx, f.AccessToken)
	if err != nil {
		ae := toAPIError(err)
		if ae.Status != http.StatusServiceUnavailable {
			ae = &apiError{Status: 401, Code: "INVALID_CREDENTIALS", Message: "Directus refused the token"}
		}
		c.Send(errorFrame(ae, f.UID))
		return
	}
	c.setToken(f.AccessToken)
	c.watchExpiry(id.Expires)
	c.Send(typedFrame("AUTH", map[string]any{"status": "ok"}, f.UID))
}
