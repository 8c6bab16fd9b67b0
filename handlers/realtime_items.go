package handlers

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// itemsFrame is {"type":"items","action","collection","data"?,"id"?,"ids"?,"query"?,"uid"?}.
type itemsFrame struct {
	Collection *string           `json:"collection"`
	Action     string            `json:"action"`
	Data       json.RawMessage   `json:"data"`
	ID         json.RawMessage   `json:"id"`
	IDs        []json.RawMessage `json:"ids"`
	Query      json.RawMessage   `json:"query"`
}

// async runs an items frame off the read loop, bounded by max_in_flight.
func (r *realtimeConn) async(c *client, uid json.RawMessage, fn func(context.Context)) {
	select {
	case c.inflight <- struct{}{}:
	default:
		c.Send(rtError("items", "REQUESTS_EXCEEDED", "Too many requests in flight on this connection.", uid))
		return
	}
	go func() {
		defer func() { <-c.inflight }()
		fn(c.ctx)
	}()
}

// items forwards an items frame to the REST API with the connection's
// token and answers {"type":"items","data","meta"?,"uid"} or an error frame
// of type "items".
func (r *realtimeConn) items(ctx context.Context, c *client, f realtimeFrame) {
	data, meta, err := r.itemsRequest(ctx, c, f)
	if err != nil {
		if ctx.Err() == nil {
			c.Send(rtAPIError("items", err, f.UID))
		}
		return
	}
	c.Send(rtItems(data, meta, f.UID))
}

func (r *realtimeConn) itemsRequest(ctx context.Context, c *client, f realtimeFrame) (data, meta json.RawMessage, err error) {
	var m itemsFrame
	if err := json.Unmarshal(f.raw, &m); err != nil {
		return nil, nil, badRequest("Validation error: " + fieldTypeError(err))
	}
	coll, aerr := realtimeCollection(m.Collection)
	if aerr != nil {
		return nil, nil, aerr
	}
	q, aerr := normalizeQuery(m.Query)
	if aerr != nil {
		return nil, nil, aerr
	}
	params, qerr := directus.QueryValues(q)
	if qerr != nil {
		return nil, nil, badRequest(qerr.Error())
	}
	id, hasID, aerr := optionalID(m.ID)
	if aerr != nil {
		return nil, nil, aerr
	}
	if _, aerr := itemIDs(m.IDs); aerr != nil {
		return nil, nil, aerr
	}
	req := directus.Request{Segments: []string{"items", coll}, Query: params, Token: c.Token()}
	if hasID {
		req.Segments = append(req.Segments, id)
	}
	switch m.Action {
	case "create":
		if !isJSONObjectOrArray(m.Data) {
			return nil, nil, badRequest(`Validation error: "data" must be an item or a list of items.`)
		}
		req.Method, req.Body = http.MethodPost, m.Data
		req.Segments = req.Segments[:2]
	case "read":
		req.Method = http.MethodGet
		if !hasID && m.IDs != nil {
			return r.readKeys(ctx, c, coll, m.IDs, q)
		}
	case "update":
		if !isJSONObjectOrArray(m.Data) {
			return nil, nil, badRequest(`Validation error: "data" must be an object.`)
		}
		req.Method = http.MethodPatch
		switch {
		case hasID:
			req.Body = m.Data
		case m.IDs != nil:
			req.Body = map[string]any{"keys": m.IDs, "data": m.Data}
		case m.Data[0] == '[':
			req.Body = m.Data // a batch of items with their keys
		case len(q) > 0:
			req.Body = map[string]any{"query": q, "data": m.Data}
		default:
			// Neither keys nor a query: a singleton (Directus updates every
			// item of a regular collection here; the REST API refuses).
			req.Body = m.Data
		}
	case "delete":
		req.Method, req.Query = http.MethodDelete, nil
		switch {
		case hasID:
			data = m.ID
		case m.IDs != nil:
			req.Body = m.IDs
			data, _ = json.Marshal(m.IDs)
		case len(q) > 0:
			// The REST API does not say which keys it deleted: data is null.
			req.Body = map[string]any{"query": q}
		default:
			return nil, nil, badRequest("Either 'ids', 'id' or 'query' is required for a DELETE request.")
		}
		if _, err := c.srv.directus.DoRaw(ctx, req); err != nil {
			return nil, nil, err
		}
		return data, nil, nil
	default:
		return nil, nil, badRequest(`Validation error: "action" must be create, read, update or delete.`)
	}
	raw, err := c.srv.directus.DoRaw(ctx, req)
	if err != nil || raw == nil {
		return nil, nil, err
	}
	var env struct {
		Data json.RawMessage `json:"data"`
		Meta json.RawMessage `json:"meta"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, nil, &directus.Error{Status: http.StatusBadGateway, Code: "BAD_GATEWAY", Message: "Directus answered with invalid JSON"}
	}
	return env.Data, env.Meta, nil
}

// readKeys reads the items with the given keys that the token may read, in
// the order of the keys (Directus's readMany).
func (r *realtimeConn) readKeys(ctx context.Context, c *client, coll string, ids []json.RawMessage, q broker.Query) (json.RawMessage, json.RawMessage, error) {
	keys := make([]string, 0, len(ids))
	for _, raw := range ids {
		k, _ := itemID(raw)
		keys = append(keys, k)
	}
	found, err := c.srv.reader.ReadItems(ctx, c.Token(), coll, keys, q)
	if err != nil {
		return nil, nil, err
	}
	out := make([]json.RawMessage, 0, len(found))
	for _, k := range keys {
		if item, ok := found[k]; ok {
			out = append(out, item)
			delete(found, k) // a key listed twice is read once
		}
	}
	data, _ := json.Marshal(out)
	return data, nil, nil
}

// optionalID reads an optional item id (a string or a number).
func optionalID(raw json.RawMessage) (string, bool, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	id, err := itemID(raw)
	if err != nil {
		return "", false, err
	}
	return id, true, nil
}

func isJSONObjectOrArray(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '{' || raw[0] == '[')
}
