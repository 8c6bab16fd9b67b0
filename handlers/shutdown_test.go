package handlers_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
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
}

func newGatedDirectus(t *testing.T) *gatedDirectus {
	target, _ := url.Parse(dx.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	g := &gatedDirectus{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/users/me") {
			g.arrived <- struct{}{}
			<-g.release
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
