// Package codectest runs a protocol codec over a real session and a real
// broker (memory bus) with a fake Directus and a fake connection, so the
// codecs' unit tests need nothing but Go. (Package session's own tests
// keep a fake of their own: they are inside package session, which this
// package imports.)
package codectest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/session"
	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// Directus answers from tables: which user each token is, which
// collections it may read, the items, and the logins it accepts.
type Directus struct {
	mu       sync.Mutex
	users    map[string]directus.Identity
	readable map[string]map[string]bool
	items    map[string]map[string]string // collection → key → JSON object
	logins   map[string]string            // email + "\x00" + password → access token
	requests []directus.Request
}

func newDirectus() *Directus {
	return &Directus{users: map[string]directus.Identity{}, readable: map[string]map[string]bool{},
		items: map[string]map[string]string{}, logins: map[string]string{}}
}

// User makes token a token of user id that may read collections.
func (d *Directus) User(token, id string, collections ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.users[token] = directus.Identity{UserID: id}
	d.readable[token] = map[string]bool{}
	for _, c := range collections {
		d.readable[token][c] = true
	}
}

// Item stores an item (a JSON object) under key.
func (d *Directus) Item(collection, key, item string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.items[collection] == nil {
		d.items[collection] = map[string]string{}
	}
	d.items[collection][key] = item
}

// Login makes email and password log in with token.
func (d *Directus) Login(email, password, token string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.logins[email+"\x00"+password] = token
}

// Requests are the REST requests made so far.
func (d *Directus) Requests() []directus.Request {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]directus.Request(nil), d.requests...)
}

var errForbidden = &directus.Error{Status: 403, Code: "FORBIDDEN", Message: "You don't have permission to access this."}

// Validate implements session.Authenticator.
func (d *Directus) Validate(_ context.Context, token string) (directus.Identity, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.users[token]
	if !ok {
		return id, &directus.Error{Status: 401, Code: "INVALID_CREDENTIALS", Message: "Invalid user credentials."}
	}
	return id, nil
}

func (d *Directus) may(token, collection string) bool {
	return d.readable[token][collection]
}

// ReadItems implements broker.Reader.
func (d *Directus) ReadItems(_ context.Context, token, collection string, keys []string, _ broker.Query) (map[string]json.RawMessage, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]json.RawMessage{}
	if !d.may(token, collection) {
		return out, nil
	}
	for _, k := range keys {
		if it, ok := d.items[collection][k]; ok {
			out[k] = json.RawMessage(it)
		}
	}
	return out, nil
}

// ReadSnapshot implements broker.Reader: every item, by key.
func (d *Directus) ReadSnapshot(_ context.Context, token, collection string, _ broker.Query) (json.RawMessage, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.may(token, collection) {
		return nil, errForbidden
	}
	return json.RawMessage(d.listLocked(collection)), nil
}

func (d *Directus) listLocked(collection string) string {
	keys := make([]string, 0, len(d.items[collection]))
	for k := range d.items[collection] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = d.items[collection][k]
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// KeysOf implements session.Reader (keys unknown: nil).
func (d *Directus) KeysOf(context.Context, string, string, json.RawMessage) []string { return nil }

// DoRaw implements session.REST: logins, reads of a collection, and an
// echo of the body for writes.
func (d *Directus) DoRaw(_ context.Context, r directus.Request) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.requests = append(d.requests, r)
	switch {
	case len(r.Segments) == 2 && r.Segments[0] == "auth" && r.Segments[1] == "login":
		b, _ := r.Body.(map[string]any)
		token, ok := d.logins[fmt.Sprint(b["email"])+"\x00"+fmt.Sprint(b["password"])]
		if !ok {
			return nil, &directus.Error{Status: 401, Code: "INVALID_CREDENTIALS", Message: "Invalid user credentials."}
		}
		return []byte(`{"data":{"access_token":"` + token + `","refresh_token":"refresh-` + token + `","expires":900000}}`), nil
	case len(r.Segments) >= 2 && r.Segments[0] == "items":
		coll := r.Segments[1]
		if !d.may(r.Token, coll) {
			return nil, errForbidden
		}
		if r.Method == http.MethodGet {
			if len(r.Segments) == 3 {
				return []byte(`{"data":` + d.items[coll][r.Segments[2]] + `}`), nil
			}
			return []byte(`{"data":` + d.listLocked(coll) + `}`), nil
		}
		body, _ := json.Marshal(r.Body)
		return []byte(`{"data":` + string(body) + `}`), nil
	}
	return []byte(`{"data":null}`), nil
}

// Rig is a broker and the collaborators of sessions, over the fake
// Directus.
type Rig struct {
	Directus *Directus
	Broker   *broker.Broker
	Deps     *session.Deps
}

// New starts a rig; the test's end stops it.
func New(t *testing.T) *Rig {
	t.Helper()
	dx := newDirectus()
	b := broker.New(broker.NewMemoryBus(100, time.Hour), dx, broker.Options{}, zerolog.Nop())
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &Rig{Directus: dx, Broker: b, Deps: &session.Deps{Broker: b, Reader: dx, Auth: dx, REST: dx,
		Limits:   session.Limits{MaxSubscriptions: 10, MaxResponseBytes: 1 << 20},
		Failures: &session.Failures{}}}
}

// Open opens a connection as the transport would after the upgrade
// (open.Token already checked): a session, then the codec's Opened.
func (r *Rig) Open(t *testing.T, open transport.Open) *Link {
	t.Helper()
	var id directus.Identity
	if open.Token != "" {
		var err error
		if id, err = r.Directus.Validate(context.Background(), open.Token); err != nil {
			t.Fatal(err)
		}
	}
	l := &Link{codec: open.Codec, frames: make(chan string, 1024), closed: make(chan string, 1), log: zerolog.New(zerolog.NewTestWriter(t))}
	sess, err := session.New(r.Deps, open.Codec, l, session.Peer{Token: open.Token, ID: id, Addr: "192.0.2.1"}, l.log)
	if err != nil {
		t.Fatal(err)
	}
	l.sess = sess
	t.Cleanup(sess.Close)
	open.Codec.Opened(l)
	return l
}

// Publish publishes events and waits until they were delivered.
func (r *Rig) Publish(t *testing.T, events ...broker.Event) {
	t.Helper()
	if err := r.Broker.Publish(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	if err := r.Broker.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Link is a connection as its codec sees it (transport.Link): frames sent
// are recorded in order.
type Link struct {
	codec  transport.Codec
	sess   *session.Session
	frames chan string
	closed chan string
	log    zerolog.Logger
	// Limit makes every frame over the rate (the answer is sent).
	Limit bool
}

var _ transport.Link = (*Link)(nil)

// Send implements session.Conn.
// Several frames joined by transport.FrameSeparator are sent one by one,
// as the transport sends a MultiFrame codec's.
func (l *Link) Send(frame []byte) {
	for _, f := range strings.Split(string(frame), "\x00") {
		l.frames <- f
	}
}

// Close implements session.Conn.
func (l *Link) Close(code int, reason string) {
	select {
	case l.closed <- fmt.Sprint(code, " ", reason):
	default:
	}
}

// Session implements transport.Link.
func (l *Link) Session() *session.Session { return l.sess }

// Async implements transport.Link (no bound).
func (l *Link) Async(fn func()) bool { go fn(); return true }

// Limited implements transport.Link.
func (l *Link) Limited(answer func() []byte) bool {
	if l.Limit {
		l.Send(answer())
	}
	return l.Limit
}

// Log implements transport.Link.
func (l *Link) Log() *zerolog.Logger { return &l.log }

// Handle hands the codec a frame from the client, as the transport does
// (one at a time, in order).
func (l *Link) Handle(frame string) { l.codec.Handle(l, []byte(frame)) }

// Next is the next frame sent (the test fails after 10 s without one).
func (l *Link) Next(t *testing.T) string {
	t.Helper()
	select {
	case f := <-l.frames:
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame sent")
	}
	return ""
}

// Expect fails unless the next frame equals want as JSON.
func (l *Link) Expect(t *testing.T, want string) {
	t.Helper()
	got := l.Next(t)
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Fatalf("frame %s is not JSON: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("want %s is not JSON: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Fatalf("frame\n %s\nwant\n %s", gb, wb)
	}
}

// Quiet fails if a frame was sent and not taken.
func (l *Link) Quiet(t *testing.T) {
	t.Helper()
	select {
	case f := <-l.frames:
		t.Fatalf("unexpected frame %s", f)
	default:
	}
}

// Closed is the close the codec asked for ("code reason"), or "" if none.
func (l *Link) Closed() string {
	select {
	case c := <-l.closed:
		return c
	default:
		return ""
	}
}

// WaitClosed is the close the codec asks for (the test fails after 10 s
// without one): for closes a timer makes.
func (l *Link) WaitClosed(t *testing.T) string {
	t.Helper()
	select {
	case c := <-l.closed:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("not closed")
	}
	return ""
}

// NextMap is the next frame as a JSON object.
func (l *Link) NextMap(t *testing.T) map[string]any {
	t.Helper()
	got := l.Next(t)
	var m map[string]any
	if err := json.Unmarshal([]byte(got), &m); err != nil {
		t.Fatalf("frame %s is not a JSON object: %v", got, err)
	}
	return m
}
