package handlers_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// gatedDirectus is a reverse proxy to the real Directus that holds token
// checks (GET /users/me) until released: a handshake can be caught in the
// middle, which the real Directus cannot be made to do on demand.
type gatedDirectus struct {
	*httptest.Server
	arrived chan struct{}
	release chan struct{}
	// on: requests to the gated path are held (from the start if the gate
	// was made with on = true).
	on atomic.Bool
}

func newGatedDirectus(t *testing.T) *gatedDirectus {
	g := newGate(t, "/users/me")
	g.on.Store(true)
	return g
}

// newGate holds the requests whose path starts with prefix while the gate
// is on, until released or given up by the broker.
func newGate(t *testing.T, prefix string) *gatedDirectus {
	target, _ := url.Parse(dx.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	g := &gatedDirectus{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.on.Load() && strings.HasPrefix(r.URL.Path, prefix) {
			select {
			case g.arrived <- struct{}{}:
			default:
			}
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(g.Close)
	return g
}

// A handshake still checking its token when shutdown closes the clients
// must not outlive the shutdown: it is refused (503) or closed with 1001,
// never left open. (It used to register after the clients were closed and
// stay open.)
func TestShutdownClosesHandshakeInProgress(t *testing.T) {
	cfg := brokerConfig(t)
	gate := newGatedDirectus(t)
	cfg.DirectusURL = gate.URL
	cfg.ShutdownTimeout = 300 * time.Millisecond
	b := brokertest.Start(t, cfg)

	type dialed struct {
		c    *brokertest.Client
		resp *http.Response
		err  error
	}
	done := make(chan dialed, 1)
	go func() {
		c, resp, err := brokertest.DialE(b.WSURL, adminToken, nil)
		done <- dialed{c, resp, err}
	}()
	<-gate.arrived // the handshake is checking its token
	stopped := make(chan error, 1)
	go func() { stopped <- b.Stop() }()
	// Shutdown waits for the upgrade request up to shutdown_timeout, gives
	// up, closes the clients it has and returns; the broker stops.
	select {
	case <-stopped:
	case <-time.After(brokertest.DefaultWait):
		t.Fatal("the broker did not stop")
	}
	close(gate.release)
	d := <-done
	if d.err != nil {
		if d.resp == nil || d.resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("dial: %v (%v)", d.err, d.resp)
		}
		return
	}
	defer d.c.Conn.Close()
	err := d.c.Closed(t)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("want close 1001, got %v", err)
	}
}

// backlog subscribes a client to articles through a Directus whose item
// reads are then held, and publishes n created articles: the broker has a
// backlog it cannot deliver until the gate opens. It returns the event ids.
func backlog(t *testing.T, shutdownTimeout time.Duration, n int) (*brokertest.Broker, *gatedDirectus, *brokertest.Client, []string) {
	cfg := brokerConfig(t)
	gate := newGate(t, "/items/articles")
	cfg.DirectusURL = gate.URL
	cfg.ShutdownTimeout = shutdownTimeout
	b := brokertest.Start(t, cfg)
	c := brokertest.Dial(t, b.WSURL, adminToken)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "s"})
	c.NextOfType(t, "SUBSCRIBED")
	gate.on.Store(true)
	var ids []string
	for i := range n {
		title := fmt.Sprintf("backlog %d", i)
		key := createItem(t, "articles", map[string]any{"title": title})
		status, body, err := b.PostWebhook(fmt.Sprintf(`{"event":"articles.items.create","payload":{"title":%q},"key":%v,"collection":"articles"}`, title, key))
		if err != nil || status != http.StatusAccepted {
			t.Fatalf("webhook: %d %s %v", status, body, err)
		}
		var out struct{ IDs []string }
		if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.IDs) != 1 {
			t.Fatalf("webhook answer %s: %v", body, err)
		}
		ids = append(ids, out.IDs[0])
	}
	<-gate.arrived // the first event's read is held
	return b, gate, c, ids
}

func wantGoingAway(t *testing.T, c *brokertest.Client) {
	t.Helper()
	err := c.Closed(t)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("want close 1001, got %v", err)
	}
}

// A shutdown with a backlog delivers it before closing (1001); a webhook
// call that arrives meanwhile is refused with 503 SHUTTING_DOWN (the Flow
// logs it), not accepted and lost, and /readyz turns 503.
func TestShutdownDeliversBacklog(t *testing.T) {
	b, gate, c, _ := backlog(t, time.Minute, 3)
	stopped := make(chan error, 1)
	go func() { stopped <- b.Stop() }()
	<-b.Server.ShuttingDown()

	status, body, err := b.PostWebhook(`{"event":"articles.items.create","payload":{"title":"late"},"key":1,"collection":"articles"}`)
	if err != nil || status != http.StatusServiceUnavailable || !strings.Contains(body, "SHUTTING_DOWN") {
		t.Fatalf("webhook during shutdown: %d %s %v", status, body, err)
	}
	resp, err := http.Get(b.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during shutdown: %d", resp.StatusCode)
	}

	close(gate.release)
	for i := range 3 {
		f := c.NextOfType(t, "SUBSCRIPTION")
		if f["payload"].(map[string]any)["title"] != fmt.Sprintf("backlog %d", i) {
			t.Fatalf("event %d: %v", i, f)
		}
	}
	wantGoingAway(t, c)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// When the backlog cannot be delivered within shutdown_timeout, each
// subscriber is told exactly which events it misses (their ids, for a
// resume elsewhere with since) before the 1001 close; nothing is lost
// silently.
func TestShutdownReportsUndeliveredBacklog(t *testing.T) {
	b, _, c, ids := backlog(t, 800*time.Millisecond, 3)
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	f := c.NextOfType(t, "ERROR")
	data := f["data"].(map[string]any)
	got := fmt.Sprint(data["event_ids"])
	if data["code"] != "EVENTS_MISSED" || data["count"] != float64(3) || got != fmt.Sprint(toAny(ids)) || f["uid"] != "s" {
		t.Fatalf("want EVENTS_MISSED for %v, got %v", ids, f)
	}
	wantGoingAway(t, c)
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}
