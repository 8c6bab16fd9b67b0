// Package brokertest starts a complete broker (bus, broker, HTTP edge) in the
// test process on a free port, and gives tests a small WebSocket client.
package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/handlers"
	"github.com/directus-ws-broker/directus-ws-broker/internal/app"
	"github.com/directus-ws-broker/directus-ws-broker/metrics"
)

// Broker is a running in-process broker.
type Broker struct {
	URL    string // http://127.0.0.1:PORT
	WSURL  string // ws://127.0.0.1:PORT + websocket_path
	Config config.Config
	Broker *broker.Broker
	Server *handlers.Server
	cancel context.CancelFunc
	done   chan error
	// stopped holds Stop's result once it ran (Stop may be called from a
	// test's goroutine and again by the cleanup).
	stopOnce sync.Once
	stopErr  error
}

// Start runs a broker with cfg (ListenAddr is forced to a free loopback
// port) and stops it when the test ends.
func Start(t testing.TB, cfg config.Config) *Broker {
	t.Helper()
	b, err := StartE(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	return b
}

// StartE is Start without a testing.TB.
func StartE(cfg config.Config, log zerolog.Logger) (*Broker, error) {
	cfg.ListenAddr = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a, err := app.New(cfg, log, metrics.Build{Version: "test", Commit: "test", GoVersion: runtime.Version()})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{
		URL: "http://" + ln.Addr().String(), WSURL: "ws://" + ln.Addr().String() + cfg.WebsocketPath,
		Config: cfg, Broker: a.Broker, Server: a.Server, cancel: cancel, done: make(chan error, 1),
	}
	go func() { b.done <- a.Run(ctx, ln) }()
	return b, nil
}

// Stop shuts the broker down gracefully and waits for it; idempotent and
// safe for concurrent use.
func (b *Broker) Stop() error {
	b.stopOnce.Do(func() {
		b.cancel()
		select {
		case b.stopErr = <-b.done:
		case <-time.After(30 * time.Second):
			b.stopErr = errors.New("broker did not stop within 30s")
		}
	})
	return b.stopErr
}

// PostWebhook posts body to the webhook with the configured secret and
// returns the status and body of the answer.
func (b *Broker) PostWebhook(body string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, b.URL+b.Config.WebhookPath, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if b.Config.WebhookSecret != "" {
		req.Header.Set("X-Webhook-Secret", b.Config.WebhookSecret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out), nil
}

// Client is a test WebSocket client reading frames in the background.
type Client struct {
	Conn   *websocket.Conn
	frames chan map[string]any
	closed chan struct{}
	// CloseErr is the error that ended the read loop (valid after closed).
	CloseErr error
}

// Dial connects to url (token "" = none) and closes the connection when the
// test ends.
func Dial(t testing.TB, url, token string) *Client {
	t.Helper()
	c, resp, err := DialE(url, token, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", url, err, status)
	}
	t.Cleanup(func() { c.Conn.Close() })
	return c
}

// DialFrom is Dial from the local address ip (another loopback address,
// 127.0.0.2: a client the broker sees elsewhere than itself).
func DialFrom(t testing.TB, url, token, ip string) *Client {
	t.Helper()
	d := *websocket.DefaultDialer
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	d.NetDialContext = nd.DialContext
	c, _, err := dialWith(&d, url, token, nil)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", url, ip, err)
	}
	t.Cleanup(func() { c.Conn.Close() })
	return c
}

// DialE dials without a testing.TB; resp is set when the server answered.
func DialE(url, token string, header http.Header) (*Client, *http.Response, error) {
	return dialWith(websocket.DefaultDialer, url, token, header)
}

func dialWith(d *websocket.Dialer, url, token string, header http.Header) (*Client, *http.Response, error) {
	if header == nil {
		header = http.Header{}
	}
	if token != "" {
		header.Set("Authorization", "Bearer "+token)
	}
	conn, resp, err := d.Dial(url, header)
	if err != nil {
		return nil, resp, err
	}
	c := &Client{Conn: conn, frames: make(chan map[string]any, 4096), closed: make(chan struct{})}
	go c.read()
	return c, resp, nil
}

func (c *Client) read() {
	defer close(c.closed)
	for {
		_, msg, err := c.Conn.ReadMessage()
		if err != nil {
			c.CloseErr = err
			return
		}
		var m map[string]any
		if err := json.Unmarshal(msg, &m); err != nil {
			m = map[string]any{"_invalid": string(msg)}
		}
		c.frames <- m
	}
}

// Send writes v as a JSON text frame.
func (c *Client) Send(t testing.TB, v any) {
	t.Helper()
	var msg []byte
	switch x := v.(type) {
	case string:
		msg = []byte(x)
	default:
		var err error
		if msg, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Conn.WriteMessage(websocket.TextMessage, msg); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// DefaultWait bounds every wait for a frame; generous, since it only
// matters when a test is about to fail.
const DefaultWait = 15 * time.Second

// recv returns the next frame. Frames read before a close come first (the
// reader queues them before it marks the close), so closed is true only
// once every one of them was taken.
func (c *Client) recv(deadline <-chan time.Time) (f map[string]any, closed, timedOut bool) {
	select {
	case f := <-c.frames:
		return f, false, false
	case <-c.closed:
		select {
		case f := <-c.frames:
			return f, false, false
		default:
			return nil, true, false
		}
	case <-deadline:
		return nil, false, true
	}
}

// Next returns the next frame, failing the test after DefaultWait.
func (c *Client) Next(t testing.TB) map[string]any {
	t.Helper()
	f, closed, timedOut := c.recv(time.After(DefaultWait))
	switch {
	case closed:
		t.Fatalf("connection closed while waiting for a frame: %v", c.CloseErr)
	case timedOut:
		t.Fatalf("no frame within %s", DefaultWait)
	}
	return f
}

// Request sends v (which should carry a uid) and returns the first frame
// with the same uid, skipping others (events).
func (c *Client) Request(t testing.TB, v map[string]any) map[string]any {
	t.Helper()
	c.Send(t, v)
	want := fmt.Sprint(v["uid"])
	deadline := time.After(DefaultWait)
	for {
		f, closed, timedOut := c.recv(deadline)
		switch {
		case closed:
			t.Fatalf("connection closed while waiting for uid %s: %v", want, c.CloseErr)
		case timedOut:
			t.Fatalf("no answer for uid %s within %s", want, DefaultWait)
		case fmt.Sprint(f["uid"]) == want:
			return f
		}
	}
}

// NextOfType returns the next frame of type typ, skipping others.
func (c *Client) NextOfType(t testing.TB, typ string) map[string]any {
	t.Helper()
	deadline := time.After(DefaultWait)
	for {
		f, closed, timedOut := c.recv(deadline)
		switch {
		case closed:
			t.Fatalf("connection closed while waiting for a %s frame: %v", typ, c.CloseErr)
		case timedOut:
			t.Fatalf("no %s frame within %s", typ, DefaultWait)
		case f["type"] == typ:
			return f
		}
	}
}

// Quiet asserts that no frame arrives until a marker round trip completes:
// it sends a ping with a fresh uid and fails on any frame before the PONG.
// This proves "nothing was sent" without sleeping: the broker handles a
// connection's frames and deliveries in order of arrival on the socket.
func (c *Client) Quiet(t testing.TB, marker string) {
	t.Helper()
	c.Send(t, map[string]any{"type": "ping", "uid": marker})
	f := c.Next(t)
	if f["type"] != "PONG" || f["uid"] != marker {
		t.Fatalf("expected nothing before the PONG %s, got %v", marker, f)
	}
}

// Closed waits until the server closed the connection and returns the
// close error.
func (c *Client) Closed(t testing.TB) error {
	t.Helper()
	select {
	case <-c.closed:
		return c.CloseErr
	case <-time.After(DefaultWait):
		t.Fatalf("connection still open after %s", DefaultWait)
	}
	return nil
}

// Settle waits until every event accepted so far has been handed to its
// subscribers' connections. After it, a Quiet round trip proves absence.
func (b *Broker) Settle(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultWait)
	defer cancel()
	if err := b.Broker.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
}
