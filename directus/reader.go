package directus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Reader implements broker.Reader over the items API.
type Reader struct {
	Client *Client

	// primaryKeys caches each collection's primary key field, learned from
	// GET /fields/<collection>: it lets several keys be read in one request.
	primaryKeys sync.Map // collection → pkEntry
	pkCount     atomic.Int64
}

// maxPrimaryKeys bounds the primary key cache.
const maxPrimaryKeys = 4096

type pkEntry struct {
	field string // "" when unknown (not readable with the token used)
	at    time.Time
}

// pkTTL bounds how long a learned primary key is trusted; pkUnknownTTL how
// long a failed lookup is remembered (so a busy collection does not ask
// /fields before every batch).
const (
	pkTTL        = 5 * time.Minute
	pkUnknownTTL = 10 * time.Second
)

var _ broker.Reader = (*Reader)(nil)

// ReadItems implements broker.Reader. Several keys are read in one request
// (filter primary key _in keys, combined with the query's own filter); one
// key, or a collection whose primary key the token cannot see, is read with
// GET /items/<collection>/<key> per key (Directus applies the query's filter
// to single-item reads and answers 403 for an item the token may not read).
func (r *Reader) ReadItems(ctx context.Context, token, collection string, keys []string, q broker.Query) (map[string]json.RawMessage, error) {
	if len(keys) > 1 {
		if pk := r.primaryKey(ctx, token, collection); pk != "" {
			items, err := r.readChunks(ctx, token, collection, pk, keys, q)
			// 4xx: this token may not filter on the primary key (a field
			// permission without it), or Directus refused the request's size;
			// reading item by item still works. 401 is the token itself.
			var de *Error
			if err == nil || !errors.As(err, &de) || de.Status < 400 || de.Status >= 500 || de.Status == http.StatusUnauthorized {
				return items, err
			}
		}
	}
	return r.readEach(ctx, token, collection, keys, q)
}

func (r *Reader) readEach(ctx context.Context, token, collection string, keys []string, q broker.Query) (map[string]json.RawMessage, error) {
	params, err := QueryValues(ItemQuery(q))
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(keys))
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
	)
	read := func(key string) {
		data, err := r.Client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"items", collection, key}, Query: params, Token: token, Kind: "read"})
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil && len(data) > 0 && string(data) != "null":
			out[key] = data
		case err == nil:
		case hidden(err):
		case firstErr == nil:
			firstErr = err
		}
	}
	if len(keys) == 1 {
		read(keys[0])
	} else {
		sem := make(chan struct{}, 8)
		for _, k := range keys {
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer func() { <-sem; wg.Done() }(); read(k) }()
		}
		wg.Wait()
	}
	if firstErr != nil {
		return nil, readError(collection, firstErr)
	}
	return out, nil
}

// batchKeys bounds the keys of one batch request: the filter travels in the
// URL, and Directus (Node) refuses request heads over 16 KiB.
const batchKeys = 100

// readChunks reads keys in requests of at most batchKeys keys.
func (r *Reader) readChunks(ctx context.Context, token, collection, pk string, keys []string, q broker.Query) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), batchKeys)
		items, err := r.readBatch(ctx, token, collection, pk, keys[:n], q)
		if err != nil {
			return nil, err
		}
		for k, v := range items {
			out[k] = v
		}
		keys = keys[n:]
	}
	return out, nil
}

// readBatch reads keys in one request and maps the items back to their keys
// by the primary key, which is added to the fields when the query leaves it
// out (and removed again from what is returned).
func (r *Reader) readBatch(ctx context.Context, token, collection, pk string, keys []string, q broker.Query) (map[string]json.RawMessage, error) {
	bq := broker.Query(ItemQuery(q))
	inKeys := make([]any, len(keys))
	for i, k := range keys {
		inKeys[i] = k
	}
	keyFilter := map[string]any{pk: map[string]any{"_in": inKeys}}
	if f, ok := q["filter"]; ok && f != nil {
		bq["filter"] = map[string]any{"_and": []any{keyFilter, f}}
	} else {
		bq["filter"] = keyFilter
	}
	strip := false
	if fields, ok := q["fields"].([]any); ok && !hasField(fields, pk) {
		bq["fields"] = append(append([]any{}, fields...), pk)
		strip = true
	} else if s, ok := q["fields"].(string); ok && !hasField(splitFields(s), pk) {
		bq["fields"] = s + "," + pk
		strip = true
	}
	bq["limit"] = len(keys)
	data, err := r.readList(ctx, token, collection, bq, "read")
	if err != nil {
		return nil, err
	}
	var items []json.RawMessage
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, fmt.Errorf("read %s: unexpected answer: %w", collection, err)
	}
	out := make(map[string]json.RawMessage, len(items))
	for _, raw := range items {
		if !strip {
			// The item goes out as Directus wrote it; only its key is read.
			var pkOnly map[string]json.RawMessage
			if json.Unmarshal(raw, &pkOnly) != nil {
				continue
			}
			if key, ok := keyText(pkOnly[pk]); ok {
				out[key] = raw
			}
			continue
		}
		var item map[string]json.RawMessage
		if json.Unmarshal(raw, &item) != nil {
			continue
		}
		key, ok := keyText(item[pk])
		if !ok {
			continue
		}
		delete(item, pk)
		out[key], _ = json.Marshal(item)
	}
	return out, nil
}

// hasField reports whether fields selects pk itself: by name, or through a
// wildcard at the top level ("*", "*.*", ...).
func hasField(fields []any, pk string) bool {
	for _, f := range fields {
		if s, _ := f.(string); s == pk || strings.HasPrefix(s, "*") {
			return true
		}
	}
	return false
}

func splitFields(s string) []any {
	var out []any
	for _, f := range strings.Split(s, ",") {
		out = append(out, strings.TrimSpace(f))
	}
	return out
}

// keyText renders a primary key value as the event keys are written.
func keyText(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	}
	return string(raw), true
}

// primaryKey returns collection's primary key field, or "" when the token
// cannot tell (then keys are read one by one).
func (r *Reader) primaryKey(ctx context.Context, token, collection string) string {
	if v, ok := r.primaryKeys.Load(collection); ok {
		e := v.(pkEntry)
		// A key learned is trusted for pkTTL; "unknown" only briefly, since
		// another token may be able to tell.
		if age := time.Since(e.at); (e.field != "" && age < pkTTL) || (e.field == "" && age < pkUnknownTTL) {
			return e.field
		}
	}
	if r.pkCount.Add(1) > maxPrimaryKeys {
		// Many distinct names (clients can choose them): start over.
		r.primaryKeys.Clear()
		r.pkCount.Store(1)
	}
	field, err := PrimaryKey(ctx, r.Client, token, collection)
	if err != nil {
		field = "" // read key by key
	}
	r.primaryKeys.Store(collection, pkEntry{field: field, at: time.Now()})
	return field
}

// ReadSnapshot implements broker.Reader.
func (r *Reader) ReadSnapshot(ctx context.Context, token, collection string, q broker.Query) (json.RawMessage, error) {
	kind := "snapshot"
	if q["limit"] == 0 {
		kind = "check" // a subscribe check reads nothing
	}
	return r.readList(ctx, token, collection, q, kind)
}

// readList is GET /items/<collection> with q; kind names it for the metrics.
func (r *Reader) readList(ctx context.Context, token, collection string, q broker.Query, kind string) (json.RawMessage, error) {
	params, err := QueryValues(q)
	if err != nil {
		return nil, err
	}
	data, err := r.Client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"items", collection}, Query: params, Token: token, Kind: kind})
	if err != nil {
		return nil, readError(collection, err)
	}
	return data, nil
}

// hidden reports whether err only means "this token cannot see this item".
func hidden(err error) bool {
	var de *Error
	return errors.As(err, &de) && (de.Status == http.StatusForbidden || de.Status == http.StatusNotFound)
}

func readError(collection string, err error) error {
	var de *Error
	if errors.As(err, &de) && de.Status == http.StatusUnauthorized {
		return fmt.Errorf("read %s: %w: %w", collection, broker.ErrTokenExpired, err)
	}
	return fmt.Errorf("read %s: %w", collection, err)
}

// KeysOf returns the primary keys of the items in a snapshot (a JSON array,
// or one object) as token sees the collection's primary key; nil when it
// cannot tell (no primary key visible, or the query left it out).
func (r *Reader) KeysOf(ctx context.Context, token, collection string, data json.RawMessage) []string {
	pk := r.primaryKey(ctx, token, collection)
	if pk == "" {
		return nil
	}
	var items []map[string]json.RawMessage
	if len(data) > 0 && data[0] == '{' {
		var one map[string]json.RawMessage
		if json.Unmarshal(data, &one) != nil {
			return nil
		}
		items = []map[string]json.RawMessage{one}
	} else if json.Unmarshal(data, &items) != nil {
		return nil
	}
	keys := make([]string, 0, len(items))
	for _, it := range items {
		k, ok := keyText(it[pk])
		if !ok {
			return nil
		}
		keys = append(keys, k)
	}
	return keys
}
