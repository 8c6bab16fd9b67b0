package directus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	values   map[string]map[string]json.RawMessage
	fields   []string
	waiting  map[string][]chan error
	inflight bool
}

// setFields makes fields (sorted) the user fields read; what was read
// without one of them is forgotten (read again when needed).
func (l *roleLoader) setFields(fields []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if slices.Equal(l.fields, fields) {
		return
	}
	l.fields = fields
	clear(l.roles)
	clear(l.values)
}

func (l *roleLoader) fieldList() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(append([]string{"id", "role"}, l.fields...), ",")
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
	if len(l.fields) == 0 {
		delete(l.values, u)
		return
	}
	if l.values == nil {
		l.values = map[string]map[string]json.RawMessage{}
	}
	vals := make(map[string]json.RawMessage, len(l.fields))
	for _, f := range l.fields {
		if v, ok := rec[f]; ok {
			vals[f] = v
		}
	}
	l.values[u] = vals
}

func (l *roleLoader) dropLocked(u string) {
	delete(l.roles, u)
	delete(l.values, u)
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
	users, err := listAll[userRecord](ctx, l.client, l.token, "users", map[string][]string{"fields": {fields}})
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fieldList2() != fields {
		return errors.New("the user fields changed during the preload")
	}
	clear(l.roles)
	clear(l.values)
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
		users, err := l.fetch(ids, fields)
		l.mu.Lock()
		if len(l.roles) > maxKnownUsers {
			clear(l.roles)
			clear(l.values)
		}
		for u := range batch {
			if rec, ok := users[u]; ok && err == nil && l.fieldList2() == fields {
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

// fieldList2 is fieldList under l.mu.
func (l *roleLoader) fieldList2() string {
	return strings.Join(append([]string{"id", "role"}, l.fields...), ",")
}
