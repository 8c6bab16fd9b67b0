package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// subscribeFrame is {"type":"subscribe","collection","query"?,"event"?,"item"?,"uid"?,"since"?}.
type subscribeFrame struct {
	Collection *string         `json:"collection"`
	Query      json.RawMessage `json:"query"`
	Event      *string         `json:"event"`
	Item       json.RawMessage `json:"item"`
	// Since resumes after a broker event id (an addition to Directus).
	Since string `json:"since"`
}

// errInvalidCollection is Directus's answer for a collection it does not
// have or does not expose.
func errInvalidCollection() *apiError {
	return &apiError{Status: http.StatusForbidden, Code: "INVALID_COLLECTION", Message: "The provided collection does not exists or is not accessible."}
}

// realtimeCollection checks a collection name. System collections
// (directus_*) are refused: their events do not reach the broker.
func realtimeCollection(name *string) (string, *apiError) {
	if name == nil {
		return "", badRequest(`Validation error: "collection" must be a string.`)
	}
	if broker.ValidateCollection(*name) != nil || strings.HasPrefix(*name, "directus_") {
		return "", errInvalidCollection()
	}
	return *name, nil
}

// subscribe attaches a subscription. As in Directus, a subscription with
// the same uid is replaced (removed first, even if the new one fails), the
// answer is an init frame with the items the query selects (without data
// when an event filter is given), and errors are {"type":"subscribe"} frames.
func (r *realtimeConn) subscribe(ctx context.Context, c *client, f realtimeFrame) {
	fail := func(err error) { c.Send(rtAPIError("subscribe", err, f.UID)) }
	var m subscribeFrame
	if err := json.Unmarshal(f.raw, &m); err != nil {
		fail(badRequest("Validation error: " + fieldTypeError(err)))
		return
	}
	coll, aerr := realtimeCollection(m.Collection)
	if aerr != nil {
		fail(aerr)
		return
	}
	var actions broker.ActionSet
	if m.Event != nil {
		act := broker.Action(*m.Event)
		if !act.Valid() {
			fail(badRequest(`Validation error: "event" must be create, update or delete.`))
			return
		}
		actions = actions.With(act)
	}
	item := ""
	if len(m.Item) > 0 && string(m.Item) != "null" {
		s, ok := uidString(m.Item)
		if !ok || s == "" || s == "." || s == ".." {
			fail(badRequest(`Validation error: "item" must be a string or a number.`))
			return
		}
		item = s
	}
	q, aerr := normalizeQuery(m.Query)
	if aerr != nil {
		fail(aerr)
		return
	}
	if m.Since != "" && !broker.ValidID(m.Since) {
		fail(badRequest(`"since" must be an event id ("<ms>-<seq>") from an earlier event`))
		return
	}

	var key string
	var uid json.RawMessage
	if len(f.UID) > 0 {
		s, _ := uidString(f.UID)
		key = "u:" + s
		uid, _ = json.Marshal(s)
	} else {
		key = "n:" + strconv.FormatUint(r.anon.Add(1), 10)
	}
	c.mu.Lock()
	old := c.subs[key]
	delete(c.subs, key)
	full := len(c.subs) >= maxSubscriptions
	c.mu.Unlock()
	if old != nil {
		c.srv.broker.Unsubscribe(old)
	}
	if full {
		fail(&apiError{Status: http.StatusTooManyRequests, Code: "LIMIT_EXCEEDED", Message: "too many subscriptions on this connection"})
		return
	}

	token := c.Token()
	s := broker.NewSubscription(coll, token, q, actions, uid, realtimeSink{c}, realtimeEncoder{item: item})
	opts := broker.AttachOptions{Since: m.Since}
	switch {
	case item != "":
		// Directus reads the one item (readOne): its object is the init data.
		// Read before attaching: an event in between is not replayed (as in
		// Directus).
		data, err := c.srv.directus.Do(ctx, itemRequest(token, coll, item, q))
		if err != nil {
			fail(err)
			return
		}
		if m.Event != nil || m.Since != "" {
			data = nil
		}
		opts.Ack = rtSubscription("init", data, uid)
	case m.Event != nil || m.Since != "":
		// No snapshot: still check now that the token may read the
		// collection with this query (Directus only finds out at the first
		// event). A resume replays events instead of the snapshot.
		if err := c.checkRead(ctx, token, coll, q); err != nil {
			fail(err)
			return
		}
		opts.Ack = rtSubscription("init", nil, uid)
	default:
		opts.Init = true
	}
	if err := c.attach(ctx, key, s, opts); err != nil && ctx.Err() == nil {
		fail(err)
	}
}

// itemRequest reads one item with a query, as the broker's reader does for
// events.
func itemRequest(token, coll, item string, q broker.Query) directus.Request {
	params, _ := directus.QueryValues(q)
	for _, p := range []string{"limit", "offset", "page", "meta", "search", "sort"} {
		params.Del(p)
	}
	return directus.Request{Method: http.MethodGet, Segments: []string{"items", coll, item}, Query: params, Token: token}
}

// unsubscribe removes the subscription with the frame's uid, or every
// subscription of the connection when there is none. Directus answers
// {"type":"subscription","event":"unsubscribe"} in both cases, also for a
// uid it does not know.
func (r *realtimeConn) unsubscribe(c *client, f realtimeFrame) {
	var removed []*broker.Subscription
	c.mu.Lock()
	if len(f.UID) > 0 {
		s, _ := uidString(f.UID)
		if sub := c.subs["u:"+s]; sub != nil {
			removed = append(removed, sub)
			delete(c.subs, "u:"+s)
		}
	} else {
		for k, sub := range c.subs {
			removed = append(removed, sub)
			delete(c.subs, k)
		}
	}
	c.mu.Unlock()
	for _, s := range removed {
		c.srv.broker.Unsubscribe(s)
	}
	c.Send(rtSubscription("unsubscribe", nil, f.UID))
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
