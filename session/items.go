package session

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// ItemsRequest is a CRUD request of either protocol, forwarded to the
// Directus REST API with the connection's token.
type ItemsRequest struct {
	// Action is create, read, update or delete.
	Action     string
	Collection *string
	// ID addresses one item; IDs several; neither: the query (read,
	// update, delete) or the singleton (read, update).
	ID    json.RawMessage
	IDs   []json.RawMessage
	Query json.RawMessage
	Data  json.RawMessage
}

// ItemsResult is Directus's answer: data, and meta when it sent one.
type ItemsResult struct {
	Data json.RawMessage
	Meta json.RawMessage
}

// Items performs req with the token the connection has when Items starts.
func (s *Session) Items(ctx context.Context, req ItemsRequest) (res ItemsResult, err error) {
	defer func() {
		if err != nil {
			s.deps.Failures.add("items", err)
		}
	}()
	return s.items(s.onBehalf(ctx), req)
}

func (s *Session) items(ctx context.Context, req ItemsRequest) (ItemsResult, error) {
	coll, err := Collection(req.Collection)
	if err != nil {
		return ItemsResult{}, err
	}
	q, err := Query(req.Query)
	if err != nil {
		return ItemsResult{}, err
	}
	params, err := directus.QueryValues(q)
	if err != nil {
		return ItemsResult{}, Invalid(err.Error())
	}
	id, hasID, err := optionalID(req.ID)
	if err != nil {
		return ItemsResult{}, err
	}
	if _, err := itemIDs(req.IDs); err != nil {
		return ItemsResult{}, err
	}
	token := s.Token()
	r := directus.Request{Segments: []string{"items", coll}, Query: params, Token: token, Kind: "crud"}
	if hasID {
		r.Segments = append(r.Segments, id)
	}
	switch req.Action {
	case "create":
		if !objectOrArray(req.Data) {
			return ItemsResult{}, Invalid(`"data" must be an item or a list of items`)
		}
		r.Method, r.Body, r.Segments = http.MethodPost, req.Data, r.Segments[:2]
	case "read":
		r.Method = http.MethodGet
		if !hasID && req.IDs != nil {
			return s.readKeys(ctx, token, coll, req.IDs, q)
		}
	case "update":
		if !objectOrArray(req.Data) {
			return ItemsResult{}, Invalid(`"data" must be an object (or a list of items with their keys)`)
		}
		r.Method = http.MethodPatch
		switch {
		case hasID:
			r.Body = req.Data
		case req.IDs != nil:
			r.Body = map[string]any{"keys": req.IDs, "data": req.Data}
		case req.Data[0] == '[':
			r.Body = req.Data // a batch of items with their keys
		case len(q) > 0:
			r.Body = map[string]any{"query": q, "data": req.Data}
		default:
			// Neither keys nor a query: a singleton.
			r.Body = req.Data
		}
	case "delete":
		var answer json.RawMessage
		r.Method, r.Query = http.MethodDelete, nil
		switch {
		case hasID:
			answer = req.ID
		case req.IDs != nil:
			r.Body = req.IDs
			answer, _ = json.Marshal(req.IDs)
		case len(q) > 0:
			// The REST API does not say which keys it deleted: data is null.
			r.Body = map[string]any{"query": q}
		default:
			return ItemsResult{}, Invalid(`"id", "ids" or "query" is required to delete`)
		}
		if _, err := s.deps.REST.DoRaw(ctx, r); err != nil {
			return ItemsResult{}, err
		}
		return ItemsResult{Data: answer}, nil
	default:
		return ItemsResult{}, Invalid(`"action" must be create, read, update or delete`)
	}
	raw, err := s.deps.REST.DoRaw(ctx, r)
	if err != nil || raw == nil {
		return ItemsResult{}, err
	}
	if s.deps.Limits.MaxResponseBytes > 0 && len(raw) > s.deps.Limits.MaxResponseBytes {
		return ItemsResult{}, ErrResponseTooLarge
	}
	var env struct {
		Data json.RawMessage `json:"data"`
		Meta json.RawMessage `json:"meta"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return ItemsResult{}, badGateway
	}
	return ItemsResult{Data: env.Data, Meta: env.Meta}, nil
}

var badGateway = &directus.Error{Status: http.StatusBadGateway, Code: "BAD_GATEWAY", Message: "Directus answered with invalid JSON"}

// readKeys reads the items with the given keys that the token may read, in
// the order of the keys (Directus's readMany).
func (s *Session) readKeys(ctx context.Context, token, coll string, ids []json.RawMessage, q broker.Query) (ItemsResult, error) {
	keys := make([]string, 0, len(ids))
	for _, raw := range ids {
		k, _ := ItemID(raw)
		keys = append(keys, k)
	}
	found, err := s.deps.Reader.ReadItems(ctx, token, coll, keys, q)
	if err != nil {
		return ItemsResult{}, err
	}
	out := make([]json.RawMessage, 0, len(found))
	size := 0
	for _, k := range keys {
		if item, ok := found[k]; ok {
			out = append(out, item)
			size += len(item)
			delete(found, k) // a key listed twice is read once
		}
	}
	if s.deps.Limits.MaxResponseBytes > 0 && size > s.deps.Limits.MaxResponseBytes {
		return ItemsResult{}, ErrResponseTooLarge
	}
	data, _ := json.Marshal(out)
	return ItemsResult{Data: data}, nil
}

// dataOf is the "data" member of a Directus answer.
func dataOf(raw []byte) (json.RawMessage, error) {
	if raw == nil {
		return nil, nil
	}
	var env struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, badGateway
	}
	return env.Data, nil
}

func objectOrArray(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '{' || raw[0] == '[')
}
