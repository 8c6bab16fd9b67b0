package directus

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Owner rules (issue 21.2). A user whose every read rule on a collection is
// F = $CURRENT_USER reads an item of it exactly when the item's F is the
// user: Directus answers a read of any other item with nothing, whatever
// the query (its filter only narrows; its relations are read from items
// the user sees). Such a user's class is per user, but it needs a read only
// for the events of the items it owns: one lookup of the batch's keys with
// the service user (primary key and F only: flow install grants that)
// tells whose they are, and only their owners' groups read, each with its
// own token. The other groups' reads would return nothing: they are not
// made, and a later delete is withheld from those groups as after such a
// read. Whatever the lookup cannot tell (it failed, a key it did not
// return, F null or not a user) is read as without it.

// ownerFieldOf is F when rule is exactly {F: {_eq: $CURRENT_USER}} (or
// $CURRENT_USER.id, or _in [$CURRENT_USER], or that alone in an _and).
func ownerFieldOf(raw []byte) (string, bool) {
	var v map[string]any
	if json.Unmarshal(raw, &v) != nil || len(v) != 1 {
		return "", false
	}
	isUser := func(x any) bool { return x == "$CURRENT_USER" || x == "$CURRENT_USER.id" }
	for k, e := range v {
		if k == "_and" {
			list, ok := e.([]any)
			if !ok || len(list) != 1 {
				return "", false
			}
			inner, _ := json.Marshal(list[0])
			return ownerFieldOf(inner)
		}
		op, ok := e.(map[string]any)
		if !ok || len(op) != 1 || strings.HasPrefix(k, "_") || !plainField(k) {
			return "", false
		}
		if isUser(op["_eq"]) {
			return k, true
		}
		if list, ok := op["_in"].([]any); ok && len(list) == 1 && isUser(list[0]) {
			return k, true
		}
	}
	return "", false
}

// addOwnerRule files policy's read rule on collection: F, or "" for any
// other rule (two rules of one policy on one collection: "" too, Directus
// does not merge them reliably).
func (m *accessModel) addOwnerRule(policy, collection string, rule []byte) {
	if m.ownerRule[policy] == nil {
		m.ownerRule[policy] = map[string]string{}
	}
	f, ok := ownerFieldOf(rule)
	if _, dup := m.ownerRule[policy][collection]; dup || !ok {
		f = ""
	}
	m.ownerRule[policy][collection] = f
}

// ownerOf is F when every read rule of a's policies on collection is F =
// $CURRENT_USER (and there is one).
func (m *accessModel) ownerOf(a access, collection string) (string, bool) {
	if a.admin {
		return "", false
	}
	f := ""
	for _, p := range a.policies {
		rule, has := m.ownerRule[p][collection]
		switch {
		case !has:
			continue
		case rule == "" || (f != "" && f != rule):
			return "", false
		}
		f = rule
	}
	return f, f != ""
}

// OwnerRules lists, per collection, the fields F of the read rules F =
// $CURRENT_USER: what the service user must read (with the primary key) of
// every item for the owner lookups (flow install grants it).
func OwnerRules(collections []string, rules []json.RawMessage) map[string][]string {
	out := map[string][]string{}
	for i, r := range rules {
		if f, ok := ownerFieldOf(r); ok && !strings.HasPrefix(collections[i], "directus_") {
			if !contains(out[collections[i]], f) {
				out[collections[i]] = append(out[collections[i]], f)
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ownerSpec is what an owner class reads: the items of collection whose
// field is user.
type ownerSpec struct{ collection, field, user string }

// Readable implements broker.KeyFilter.
func (c *Classes) Readable(ctx context.Context, class, collection string, keys []string, batch string) ([]string, bool) {
	v, ok := c.owners.Load(class + "\x00" + collection)
	if !ok {
		return nil, false
	}
	spec := v.(ownerSpec)
	m := c.model.Load()
	if spec.collection != collection || m == nil || m.schema.pk[collection] == "" {
		return nil, false
	}
	owners, err := c.lookups.owners(ctx, c.client, c.service, collection, m.schema.pk[collection], spec.field, keys, batch)
	if err != nil {
		return nil, false
	}
	var readable []string
	for _, k := range keys {
		if o, known := owners[k]; !known || o == "" || o == spec.user {
			readable = append(readable, k)
		}
	}
	return readable, true
}

// ownerLookups shares each batch's lookup between the classes reading it:
// one service read per (collection, field, keys, batch).
type ownerLookups struct {
	mu      sync.Mutex
	entries map[string]*lookup
	order   []string
}

type lookup struct {
	done   chan struct{}
	owners map[string]string // key → owner ("" for null or not a user id)
	err    error
}

// maxLookups bounds the batches whose lookups are kept.
const maxLookups = 1024

func (l *ownerLookups) owners(ctx context.Context, client *Client, token, collection, pk, field string, keys []string, batch string) (map[string]string, error) {
	id := collection + "\x00" + field + "\x00" + batch + "\x00" + strings.Join(keys, ",")
	l.mu.Lock()
	if l.entries == nil {
		l.entries = map[string]*lookup{}
	}
	e, ok := l.entries[id]
	if !ok {
		e = &lookup{done: make(chan struct{})}
		l.entries[id] = e
		l.order = append(l.order, id)
		if len(l.order) > maxLookups {
			delete(l.entries, l.order[0])
			l.order = l.order[1:]
		}
	}
	l.mu.Unlock()
	if !ok {
		e.owners, e.err = fetchOwners(client, token, collection, pk, field, keys)
		close(e.done)
	}
	select {
	case <-e.done:
		return e.owners, e.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func fetchOwners(client *Client, token, collection, pk, field string, keys []string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	filter, _ := json.Marshal(map[string]any{pk: map[string]any{"_in": keys}})
	data, err := client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"items", collection}, Token: token, Kind: "model",
		Query: map[string][]string{"filter": {string(filter)}, "fields": {pk + "," + field}, "limit": {"-1"}}})
	if err != nil {
		return nil, fmt.Errorf("owner lookup of %s: %w", collection, err)
	}
	var rows []map[string]json.RawMessage
	if err := json.Unmarshal(data, &rows); err != nil {
		return nil, fmt.Errorf("owner lookup of %s: %w", collection, err)
	}
	out := make(map[string]string, len(rows))
	for _, r := range rows {
		key := string(r[pk])
		var s string
		if json.Unmarshal(r[pk], &s) == nil {
			key = s
		}
		var owner string
		if json.Unmarshal(r[field], &owner) != nil {
			owner = "" // null, or not a user id: unknown
		}
		out[key] = owner
	}
	return out, nil
}
