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
	if f, uf, ok := ownerRuleOf(raw); ok && uf == "" {
		return f, true
	}
	return "", false
}

// ownerRuleOf is F and "" for an owner rule (see ownerFieldOf), or F and
// U for a rule exactly {F: {_eq: $CURRENT_USER.U}} (a team rule: the items
// whose F is the user's U, U a field or a path of many-to-ones).
func ownerRuleOf(raw []byte) (field, userField string, ok bool) {
	var v map[string]any
	if json.Unmarshal(raw, &v) != nil || len(v) != 1 {
		return "", "", false
	}
	// variable is "" for the user, U for $CURRENT_USER.U.
	variable := func(x any) (string, bool) {
		s, _ := x.(string)
		if s == "$CURRENT_USER" || s == "$CURRENT_USER.id" {
			return "", true
		}
		u, ok := strings.CutPrefix(s, "$CURRENT_USER.")
		// U may be a path through the user's relations (org.tier): the
		// model shares by it only where it reads it as Directus does.
		return u, ok && userPath(u)
	}
	for k, e := range v {
		if k == "_and" {
			list, ok := e.([]any)
			if !ok || len(list) != 1 {
				return "", "", false
			}
			inner, _ := json.Marshal(list[0])
			return ownerRuleOf(inner)
		}
		op, ok := e.(map[string]any)
		if !ok || len(op) != 1 || strings.HasPrefix(k, "_") || !plainField(k) {
			return "", "", false
		}
		if u, ok := variable(op["_eq"]); ok {
			return k, u, true
		}
		if list, ok := op["_in"].([]any); ok && len(list) == 1 {
			if u, ok := variable(list[0]); ok && u == "" {
				return k, "", true
			}
		}
	}
	return "", "", false
}

// addOwnerRule files policy's read rule on collection: "F" for an owner
// rule, "F=U" for a team rule, "" for any other rule (two rules of one
// policy on one collection: "" too, Directus does not merge them
// reliably).
func (m *accessModel) addOwnerRule(policy, collection string, rule []byte) {
	if m.ownerRule[policy] == nil {
		m.ownerRule[policy] = map[string]string{}
	}
	f := ruleKind(rule)
	if _, dup := m.ownerRule[policy][collection]; dup {
		f = ""
	}
	m.ownerRule[policy][collection] = f
}

// ownerOf is F and "" when every read rule of a's policies on collection
// is F = $CURRENT_USER, F and U when every one is F = $CURRENT_USER.U (and
// there is one).
func (m *accessModel) ownerOf(a access, collection string) (field, userField string, ok bool) {
	if a.admin {
		return "", "", false
	}
	rule := ""
	for _, p := range a.policies {
		r, has := m.ownerRule[p][collection]
		switch {
		case !has:
			continue
		case r == "" || r == independentRule || strings.Contains(r, "|") || (rule != "" && rule != r):
			return "", "", false
		}
		rule = r
	}
	field, userField, _ = strings.Cut(rule, "=")
	return field, userField, rule != ""
}

// OwnerRules lists, per collection, the fields F of the read rules F =
// $CURRENT_USER: what the service user must read (with the primary key) of
// every item for the owner lookups (flow install grants it).
func OwnerRules(collections []string, rules []json.RawMessage) map[string][]string {
	out := map[string][]string{}
	for i, r := range rules {
		f, _, ok := ownerRuleOf(r)
		if !ok {
			f, ok = ownerPartOf(r)
		}
		if ok && !strings.HasPrefix(collections[i], "directus_") {
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

// ownerSpec is what an owner (or team) class reads: the items of
// collection whose field's value is value (JSON: the user's id, or the
// members' value of the user field the rule names).
type ownerSpec struct {
	collection, field, value string
	// mixed: the class also sees the items of a user-independent rule;
	// share is the class its reads of others' items are shared under.
	mixed bool
	share string
}

// Readable implements broker.KeyFilter.
func (c Classifier) Readable(ctx context.Context, class, collection string, keys []string, batch string) ([]string, bool) {
	v, ok := c.owners.Load(class + "\x00" + collection)
	if !ok {
		return nil, false
	}
	spec := v.(ownerSpec)
	m := c.model.Load()
	if spec.mixed || spec.collection != collection || m == nil || m.schema.pk[collection] == "" {
		return nil, false
	}
	owners, err := c.lookups.owners(ctx, c.client, c.service, collection, m.schema.pk[collection], spec.field, keys, batch)
	if err != nil {
		return nil, false
	}
	var readable []string
	for _, k := range keys {
		if o, known := owners[k]; !known || mayMatch(o, spec.value) {
			readable = append(readable, k)
		}
	}
	return readable, true
}

// mayMatch reports whether an item whose field reads as item may match a
// rule comparing it with value (both JSON): unless both are known, of one
// JSON type (Directus may cast a number to a string) and different.
func mayMatch(item, value string) bool {
	if item == "" || value == "" || item == value {
		return true
	}
	return (item[0] == '"') != (value[0] == '"')
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
	owners map[string]string // key → the field's value as JSON ("null": nobody's); a key not known is absent
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
		v, ok := r[field]
		if !ok || len(v) == 0 || v[0] == '[' || v[0] == '{' {
			continue // not known: read as without the lookup
		}
		out[key] = string(v) // "null" for nobody's
	}
	return out, nil
}
