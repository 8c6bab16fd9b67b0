package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// The session's operations against a real broker (memory bus) and a fake
// Directus: tokens map to users, and each token reads the collections it
// is allowed.

type fakeDirectus struct {
	mu       sync.Mutex
	users    map[string]directus.Identity // token → identity
	readable map[string]map[string]bool   // token → collections it may read
	checks   int                          // subscribe checks made
	down     bool                         // checks fail: Directus unreachable
	body     string                       // what REST answers
}

func newFakeDirectus() *fakeDirectus {
	return &fakeDirectus{users: map[string]directus.Identity{}, readable: map[string]map[string]bool{}}
}

func (d *fakeDirectus) user(token, id string, collections ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.users[token] = directus.Identity{UserID: id}
	d.readable[token] = map[string]bool{}
	for _, c := range collections {
		d.readable[token][c] = true
	}
}

func (d *fakeDirectus) Validate(_ context.Context, token string) (directus.Identity, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.users[token]
	if !ok {
		return id, &directus.Error{Status: 401, Code: "INVALID_CREDENTIALS", Message: "Invalid user credentials."}
	}
	return id, nil
}

func (d *fakeDirectus) may(token, collection string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.readable[token][collection] {
		return &directus.Error{Status: 403, Code: "FORBIDDEN", Message: "You don't have permission to access this."}
	}
	return nil
}

func (d *fakeDirectus) ReadItems(_ context.Context, token, collection string, keys []string, _ broker.Query) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	if d.may(token, collection) != nil {
		return out, nil
	}
	for _, k := range keys {
		out[k] = json.RawMessage(`{"id":` + k + `}`)
	}
	return out, nil
}

func (d *fakeDirectus) ReadSnapshot(_ context.Context, token, collection string, q broker.Query) (json.RawMessage, error) {
	d.mu.Lock()
	d.checks++
	down := d.down
	d.mu.Unlock()
	if down {
		return nil, fmt.Errorf("read: %w", directus.ErrUnavailable)
	}
	if err := d.may(token, collection); err != nil {
		return nil, err
	}
	return json.RawMessage(`[]`), nil
}

func (d *fakeDirectus) KeysOf(context.Context, string, string, json.RawMessage) []string { return nil }

func (d *fakeDirectus) DoRaw(_ context.Context, r directus.Request) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return []byte(d.body), nil
}

// userClasses puts every token of one user in one class.
type userClasses struct{}

func (userClasses) Class(c broker.Credentials, _ string, _ broker.Query) string {
	id, _ := c.Principal.(directus.Identity)
	return "user:" + id.UserID
}

type fakeConn struct {
	mu     sync.Mutex
	frames []string
	closed string
	notify chan string
}

func newFakeConn() *fakeConn { return &fakeConn{notify: make(chan string, 1024)} }

func (c *fakeConn) Send(f []byte) {
	c.mu.Lock()
	c.frames = append(c.frames, string(f))
	c.mu.Unlock()
	c.notify <- string(f)
}

func (c *fakeConn) Close(code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = fmt.Sprint(code, " ", reason)
}

// next waits for the next frame.
func (c *fakeConn) next(t *testing.T) string {
	t.Helper()
	select {
	case f := <-c.notify:
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no frame")
	}
	return ""
}

type fakeProto struct{}

func (fakeProto) TokenExpired() []byte     { return []byte("token-expired") }
func (fakeProto) AuthGrace() time.Duration { return time.Hour }
func (fakeProto) GraceOver(*Session)       {}
func (fakeProto) Dropped(sub *broker.Subscription, err error) []byte {
	return []byte("dropped " + sub.Collection + " " + AsError(err).Code)
}

type textEncoder struct{}

func (textEncoder) Event(d *broker.Delivery, _ json.RawMessage) []byte {
	return []byte(string(d.Event.Action) + " " + strings.Join(d.Keys, ","))
}
func (textEncoder) Ack(s *broker.Subscription, _ bool) []byte { return []byte("ack " + s.Collection) }
func (textEncoder) Init(*broker.Subscription, json.RawMessage) []byte {
	return []byte("init")
}
func (textEncoder) Notice(_ *broker.Subscription, n broker.Notice) []byte {
	return []byte("notice " + n.Code)
}

type rig struct {
	dx   *fakeDirectus
	b    *broker.Broker
	deps *Deps
}

func newRig(t *testing.T, classes broker.Classifier) *rig {
	t.Helper()
	dx := newFakeDirectus()
	b := broker.New(broker.NewMemoryBus(100, time.Hour), dx, broker.Options{Classifier: classes}, zerolog.Nop())
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return &rig{dx: dx, b: b, deps: &Deps{Broker: b, Reader: dx, Auth: dx, REST: dx, Classes: classes,
		Limits: Limits{MaxSubscriptions: 3, MaxResponseBytes: 1000}}}
}

func (r *rig) session(t *testing.T, token string) (*Session, *fakeConn) {
	t.Helper()
	id, _ := r.dx.Validate(context.Background(), token)
	c := newFakeConn()
	s, err := New(r.deps, fakeProto{}, c, Peer{Token: token, ID: id, Addr: "192.0.2.1"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, c
}

func (r *rig) publish(t *testing.T, coll string, key string) {
	t.Helper()
	if err := r.b.Publish(context.Background(), []broker.Event{{Action: broker.ActionUpdate, Collection: coll, Keys: []string{key}, Payload: json.RawMessage(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if err := r.b.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func str(s string) *string { return &s }

func subscribe(s *Session, key, coll string) (*broker.Subscription, error) {
	return s.Subscribe(context.Background(), SubscribeRequest{Key: key, Collection: str(coll), Encoder: textEncoder{}})
}

// A subscribe with an existing key removes the old subscription first, even
// when the new one fails.
func TestReplaceRule(t *testing.T) {
	r := newRig(t, nil)
	r.dx.user("a", "ua", "c")
	s, c := r.session(t, "a")
	if _, err := subscribe(s, "k", "c"); err != nil {
		t.Fatal(err)
	}
	if f := c.next(t); f != "ack c" {
		t.Fatal(f)
	}
	if _, err := subscribe(s, "k", "forbidden"); AsError(err).Code != "FORBIDDEN" {
		t.Fatalf("want FORBIDDEN, got %v", err)
	}
	r.publish(t, "c", "1")
	if got := len(s.Subscriptions()); got != 0 {
		t.Fatalf("%d subscriptions left", got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.frames) != 1 {
		t.Fatalf("the replaced subscription still delivers: %v", c.frames)
	}
}

func TestSubscriptionLimitAndValidation(t *testing.T) {
	r := newRig(t, nil)
	r.dx.user("a", "ua", "c")
	s, _ := r.session(t, "a")
	for i := range 3 {
		if _, err := subscribe(s, fmt.Sprint(i), "c"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := subscribe(s, "4", "c"); !errors.Is(err, ErrTooManySubscriptions) {
		t.Fatalf("4th: %v", err)
	}
	if _, err := subscribe(s, "0", "c"); err != nil {
		t.Fatalf("replacing within the limit: %v", err)
	}
	for _, bad := range []string{"../users", "directus_users"} {
		if _, err := subscribe(s, "x", bad); err == nil {
			t.Fatalf("%s accepted", bad)
		}
	}
}

// A token change that changes a subscription's class checks the new access
// first: a subscription the new token may not read ends (deletes reach
// subscribers without a read, so it must not go on); the same user's new
// token keeps its class and costs no check.
func TestAuthRechecksOnClassChange(t *testing.T) {
	r := newRig(t, userClasses{})
	r.dx.user("a", "ua", "c", "d")
	r.dx.user("a2", "ua", "c", "d") // a refreshed token of the same user
	r.dx.user("b", "ub", "d")       // may read d only
	s, c := r.session(t, "a")
	for _, coll := range []string{"c", "d"} {
		if _, err := subscribe(s, coll, coll); err != nil {
			t.Fatal(err)
		}
		c.next(t)
	}
	checks := r.dx.checks
	if _, err := s.Authenticate(context.Background(), "a2"); err != nil {
		t.Fatal(err)
	}
	if r.dx.checks != checks {
		t.Fatalf("a refresh of the same user made %d checks", r.dx.checks-checks)
	}
	if _, err := s.Authenticate(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if f := c.next(t); f != "dropped c FORBIDDEN" {
		t.Fatalf("got %q", f)
	}
	if n := len(s.Subscriptions()); n != 1 {
		t.Fatalf("%d subscriptions after the switch", n)
	}
	r.publish(t, "d", "1")
	if f := c.next(t); f != "update 1" {
		t.Fatalf("d continues: %q", f)
	}
	if _, err := s.Authenticate(context.Background(), "unknown"); err == nil || s.Token() != "b" {
		t.Fatalf("a refused token must change nothing: %v %q", err, s.Token())
	}
}

// An expired token suspends the subscriptions (they get notices, not data)
// and refuses new ones until a new token comes.
func TestExpirySuspends(t *testing.T) {
	r := newRig(t, nil)
	r.dx.user("a", "ua", "c")
	r.dx.user("a2", "ua", "c")
	s, c := r.session(t, "a")
	if _, err := subscribe(s, "k", "c"); err != nil {
		t.Fatal(err)
	}
	c.next(t)
	s.TokenExpired("other") // a token the connection does not hold
	s.TokenExpired("a")
	if f := c.next(t); f != "token-expired" {
		t.Fatalf("got %q", f)
	}
	r.publish(t, "c", "1")
	if f := c.next(t); f != "notice EVENTS_MISSED" {
		t.Fatalf("suspended subscription got %q", f)
	}
	if _, err := subscribe(s, "k2", "c"); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("subscribe while expired: %v", err)
	}
	if _, err := s.Authenticate(context.Background(), "a2"); err != nil {
		t.Fatal(err)
	}
	r.publish(t, "c", "2")
	if f := c.next(t); f != "update 2" {
		t.Fatalf("after a new token: %q", f)
	}
}

// An answer larger than the send queue is refused with a clear error
// instead of evicting the client.
func TestItemsResponseTooLarge(t *testing.T) {
	r := newRig(t, nil)
	r.dx.user("a", "ua", "c")
	r.dx.body = `{"data":"` + strings.Repeat("x", 2000) + `"}`
	s, _ := r.session(t, "a")
	_, err := s.Items(context.Background(), ItemsRequest{Action: "read", Collection: str("c")})
	if !errors.Is(err, ErrResponseTooLarge) || AsError(err).Status != http.StatusRequestEntityTooLarge {
		t.Fatalf("got %v", err)
	}
	r.dx.body = `{"data":[1]}`
	res, err := s.Items(context.Background(), ItemsRequest{Action: "read", Collection: str("c")})
	if err != nil || string(res.Data) != "[1]" {
		t.Fatalf("small answer: %s %v", res.Data, err)
	}
}

// An auth while Directus cannot be reached does not rebind unchecked: the
// subscription whose class changes ends (the new token may not read the
// collection, and deletes reach subscribers without a read) (issue 19.5).
func TestAuthWhileDirectusDownFailsClosed(t *testing.T) {
	r := newRig(t, userClasses{})
	r.dx.user("a", "ua", "c")
	r.dx.user("b", "ub") // may read nothing
	s, c := r.session(t, "a")
	if _, err := subscribe(s, "c", "c"); err != nil {
		t.Fatal(err)
	}
	c.next(t)
	r.dx.mu.Lock()
	r.dx.down = true
	r.dx.mu.Unlock()
	if _, err := s.Authenticate(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if f := c.next(t); f != "dropped c SERVICE_UNAVAILABLE" {
		t.Fatalf("got %q", f)
	}
	if err := r.b.Publish(context.Background(), []broker.Event{{Action: broker.ActionDelete, Collection: "c", Keys: []string{"1"}, Payload: json.RawMessage(`["1"]`)}}); err != nil {
		t.Fatal(err)
	}
	if err := r.b.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.frames {
		if strings.HasPrefix(f, "delete") {
			t.Fatalf("the unchecked token received a delete: %v", c.frames)
		}
	}
}
