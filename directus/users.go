package directus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// roleLoader knows, of users, their current role and the values of the
// fields of theirs that read rules name ($CURRENT_USER.<field>), read with
// the service token. Lookups of many subscribers at once (a reconnect
// storm) share requests: one is in flight at a time, and the users asked
// for meanwhile are read together by the next (up to batchKeys per
// request).
type roleLoader struct {
	client *Client
	token  string

	mu    sync.Mutex
	roles map[string]*string // user → role (nil pointer: no role)
	// values[user][field] are the user's values of fields (raw JSON), read
	// with the role: every user known has all of them.
	values map[string]map[string]json.RawMessage
	fields []string
	// paths are the fields of fields that pass related items
	// ("org.tier"), with the collections they pass; refs[user] are the
	// related items the user's values were read from ("orgs\x00<key>"): an
	// event of one changes them (userpath.go).
	paths map[string][]pathStep
	refs  map[string][]string
	// moved counts changes of related items: a read that began before one
	// may hold values from before it, so its users' values are dropped.
	moved    uint64
	waiting  map[string][]chan error
	inflight bool
}

// setFields makes fields (sorted) the user fields read, paths among them
// passing the related collections given; what was read without one of
// them is forgotten (read again when needed).
func (l *roleLoader) setFields(fields []string, paths map[string][]pathStep) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.Equal(l.fields, fields) && maps.EqualFunc(l.paths, paths, slices.Equal) {
		return
	}
	l.fields, l.paths = fields, paths
	clear(l.roles)
	clear(l.values)
	clear(l.refs)
}

func (l *roleLoader) fieldList() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fieldList2()
}

// userRecord is one user as the loader reads it.
type userRecord map[string]json.RawMessage

// id and role of a record ("" and nil when absent or null).
func (r userRecord) id() string {
	var s string
	_ = json.Unmarshal(r["id"], &s)
	return s
}

func (r userRecord) role() *string {
	var s *string
	_ = json.Unmarshal(r["role"], &s)
	return s
}

// store files records (under l.mu).
func (l *roleLoader) storeLocked(u string, rec userRecord) {
	l.roles[u] = rec.role()
	delete(l.refs, u)
	if len(l.fields) == 0 {
		delete(l.values, u)
		return
	}
	if l.values == nil {
		l.values = map[string]map[string]json.RawMessage{}
	}
	vals := make(map[string]json.RawMessage, len(l.fields))
	var refs []string
	for _, f := range l.fields {
		if steps, ok := l.paths[f]; ok {
			v, through, ok := pathValue(rec, strings.Split(f, "."), steps)
			refs = append(refs, through...)
			if ok {
				vals[f] = v
			}
		} else if v, ok := rec[f]; ok {
			vals[f] = v
		}
	}
	l.values[u] = vals
	if len(refs) > 0 {
		if l.refs == nil {
			l.refs = map[string][]string{}
		}
		l.refs[u] = refs
	}
}

// pathValue is the value at segs in a user's record read with the path's
// primary keys (org.id, org.tier: {"org": {"id": 7, "tier": "gold"}}), and
// the related items it passed. A step that is not one related item (null:
// no org; a list) has no value: such a user reads apart.
func pathValue(rec userRecord, segs []string, steps []pathStep) (json.RawMessage, []string, bool) {
	var through []string
	cur := map[string]json.RawMessage(rec)
	for i, seg := range segs[:len(segs)-1] {
		raw := cur[seg]
		var next map[string]json.RawMessage
		if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &next) != nil {
			return nil, through, false
		}
		key, ok := keyText(next[steps[i].pk])
		if !ok {
			return nil, through, false
		}
		through = append(through, steps[i].collection+"\x00"+key)
		cur = next
	}
	v, ok := cur[segs[len(segs)-1]]
	return v, through, ok
}

func (l *roleLoader) dropLocked(u string) {
	delete(l.roles, u)
	delete(l.values, u)
	delete(l.refs, u)
}

// referring are the users whose values were read through one of keys of
// collection.
func (l *roleLoader) referring(collection string, keys []string) []string {
	want := make(map[string]bool, len(keys))
	for _, k := range keys {
		want[collection+"\x00"+k] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for u, refs := range l.refs {
		if slices.ContainsFunc(refs, func(r string) bool { return want[r] }) {
			out = append(out, u)
		}
	}
	return out
}

// refers reports whether user's values were read through one of keys of
// collection.
func (l *roleLoader) refers(user, collection string, keys []string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.refs[user] {
		c, k, _ := strings.Cut(r, "\x00")
		if c == collection && slices.Contains(keys, k) {
			return true
		}
	}
	return false
}

// itemsMoved records a change of items of collection a user path passes:
// the users read through them are forgotten unless keep (their values
// are read again by the caller), and reads begun before it store nothing
// of a path.
func (l *roleLoader) itemsMoved(collection string, keys []string, keep bool) []string {
	users := l.referring(collection, keys)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.moved++
	if !keep {
		for _, u := range users {
			l.dropLocked(u)
		}
	}
	return users
}

// valuesOf is the canonical text of user's values of fields, when every
// one is known and plain (a list or an object, as an alias field reads, and
// a concealed field's mask are not: such a user reads apart).
func (l *roleLoader) valuesOf(user string, fields []string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	vals := l.values[user]
	var b strings.Builder
	for _, f := range fields {
		v, ok := vals[f]
		if !ok || len(v) == 0 || v[0] == '[' || v[0] == '{' || string(v) == concealed {
			return "", false
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(f)
		b.WriteByte('=')
		b.Write(v)
	}
	return b.String(), true
}

// maxPreload bounds the users whose roles Load reads at once.
const maxPreload = 100000

// preload reads the roles of all users, unless there are more than
// maxPreload (they are then read on demand).
func (l *roleLoader) preload(ctx context.Context) error {
	// The count first: past maxPreload, roles are read on demand.
	raw, err := l.client.DoRaw(ctx, Request{Method: http.MethodGet, Segments: []string{"users"}, Token: l.token, Kind: "model",
		Query: map[string][]string{"fields": {"id"}, "limit": {"0"}, "meta": {"filter_count"}}})
	if err != nil {
		return err
	}
	var count struct {
		Meta struct {
			FilterCount int `json:"filter_count"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(raw, &count); err != nil {
		return err
	}
	if count.Meta.FilterCount > maxPreload {
		return fmt.Errorf("more than %d users", maxPreload)
	}
	fields := l.fieldList()
	l.mu.Lock()
	moved := l.moved
	l.mu.Unlock()
	users, err := listAll[userRecord](ctx, l.client, l.token, "users", map[string][]string{"fields": {fields}})
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fieldList2() != fields {
		return errors.New("the user fields changed during the preload")
	}
	if moved != l.moved && len(l.paths) > 0 {
		return errors.New("items a user path passes changed during the preload")
	}
	clear(l.roles)
	clear(l.values)
	clear(l.refs)
	for _, u := range users {
		l.storeLocked(u.id(), u)
	}
	return nil
}

// forget drops the roles of users.
func (l *roleLoader) forget(users []string) {
	l.mu.Lock()
	for _, u := range users {
		l.dropLocked(u)
	}
	l.mu.Unlock()
}

// forgetAll drops every known role.
func (l *roleLoader) forgetAll() {
	l.mu.Lock()
	clear(l.roles)
	clear(l.values)
	clear(l.refs)
	l.mu.Unlock()
}

// role is user's role when known.
func (l *roleLoader) role(user string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r, ok := l.roles[user]
	if !ok {
		return "", false
	}
	if r == nil {
		return "", true
	}
	return *r, true
}

// maxKnownUsers bounds the role cache; past it, it starts over (the roles
// of users still connected are read again when they next subscribe).
const maxKnownUsers = 100000

// load reads the roles of users (again, with fresh) and waits for them.
func (l *roleLoader) load(ctx context.Context, users []string, fresh bool) error {
	l.mu.Lock()
	var chans []chan error
	for _, u := range users {
		if _, ok := l.roles[u]; ok && !fresh {
			continue
		}
		ch := make(chan error, 1)
		if l.waiting == nil {
			l.waiting = map[string][]chan error{}
		}
		l.waiting[u] = append(l.waiting[u], ch)
		chans = append(chans, ch)
	}
	start := len(chans) > 0 && !l.inflight
	if start {
		l.inflight = true
	}
	l.mu.Unlock()
	if start {
		go l.run()
	}
	var errs []error
	for _, ch := range chans {
		select {
		case err := <-ch:
			if err != nil {
				errs = append(errs, err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// run reads the waiting users batch after batch until none waits.
func (l *roleLoader) run() {
	for {
		l.mu.Lock()
		if len(l.waiting) == 0 {
			l.inflight = false
			l.mu.Unlock()
			return
		}
		batch := map[string][]chan error{}
		for u, chans := range l.waiting {
			batch[u] = chans
			delete(l.waiting, u)
			if len(batch) == batchKeys {
				break
			}
		}
		l.mu.Unlock()
		ids := make([]any, 0, len(batch))
		for u := range batch {
			ids = append(ids, u)
		}
		fields := l.fieldList()
		l.mu.Lock()
		moved := l.moved
		l.mu.Unlock()
		users, err := l.fetch(ids, fields)
		if de := (*Error)(nil); errors.As(err, &de) && de.Status == http.StatusForbidden && l.hasPaths() {
			// The service user may not read a path now (a grant removed,
			// not reread yet): the roles and fields without it, so its
			// users read apart and the rest goes on.
			users, err = l.fetch(ids, l.plainFieldList())
		}
		l.mu.Lock()
		if len(l.roles) > maxKnownUsers {
			clear(l.roles)
			clear(l.values)
			clear(l.refs)
		}
		for u := range batch {
			if rec, ok := users[u]; ok && err == nil && l.fieldList2() == fields && (moved == l.moved || len(l.paths) == 0) {
				l.storeLocked(u, rec)
			} else {
				// Not readable, gone, the read failed or the fields changed
				// meanwhile: what was known may be stale, so the user reads
				// apart until a read succeeds.
				l.dropLocked(u)
			}
		}
		l.mu.Unlock()
		for _, chans := range batch {
			for _, ch := range chans {
				ch <- err
			}
		}
	}
}

func (l *roleLoader) fetch(ids []any, fields string) (map[string]userRecord, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	filter, _ := json.Marshal(map[string]any{"id": map[string]any{"_in": ids}})
	data, err := l.client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"users"}, Token: l.token, Kind: "model",
		Query: map[string][]string{"filter": {string(filter)}, "fields": {fields}, "limit": {"-1"}}})
	if err != nil {
		return nil, fmt.Errorf("access: read users' roles: %w", err)
	}
	var users []userRecord
	if err := json.Unmarshal(data, &users); err != nil {
		return nil, fmt.Errorf("access: read users' roles: %w", err)
	}
	out := make(map[string]userRecord, len(users))
	for _, u := range users {
		out[u.id()] = u
	}
	return out, nil
}

func (l *roleLoader) hasPaths() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.paths) > 0
}

// plainFieldList is fieldList without the paths.
func (l *roleLoader) plainFieldList() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := []string{"id", "role"}
	for _, f := range l.fields {
		if _, ok := l.paths[f]; !ok {
			out = append(out, f)
		}
	}
	return strings.Join(out, ",")
}

// fieldList2 is fieldList under l.mu: a path is read with the primary
// key of each related item it passes (org.id,org.tier).
func (l *roleLoader) fieldList2() string {
	out := []string{"id", "role"}
	for _, f := range l.fields {
		if steps, ok := l.paths[f]; ok {
			segs := strings.Split(f, ".")
			for i, s := range steps {
				if k := strings.Join(segs[:i+1], ".") + "." + s.pk; !slices.Contains(out, k) {
					out = append(out, k)
				}
			}
		}
		out = append(out, f)
	}
	return strings.Join(out, ",")
}
