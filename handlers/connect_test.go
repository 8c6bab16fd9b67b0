package handlers_test

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestUpgradeAuth checks who may connect.
func TestUpgradeAuth(t *testing.T) {
	private := brokertest.Start(t, brokerConfig(t))
	pubCfg := brokerConfig(t)
	pubCfg.WebsocketPublic = true
	pubCfg.AllowedOrigins = []string{"https://app.example.com"}
	public := brokertest.Start(t, pubCfg)

	// A closed port stands in for an unreachable Directus.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + ln.Addr().String()
	ln.Close()
	downCfg := brokerConfig(t)
	downCfg.DirectusURL = deadURL
	down := brokertest.Start(t, downCfg)

	cases := []struct {
		name   string
		url    string
		token  string
		header http.Header
		status int // 0: the upgrade succeeds
	}{
		{"static token in Authorization", private.WSURL, adminToken, nil, 0},
		{"token as access_token", private.WSURL + "?access_token=" + pubToken, "", nil, 0},
		{"token as api_token", private.WSURL + "?api_token=" + pubToken, "", nil, 0},
		{"invalid token", private.WSURL, "not-a-token", nil, 401},
		{"invalid token is never downgraded to public", public.WSURL, "not-a-token", nil, 401},
		{"no token, public off", private.WSURL, "", nil, 401},
		{"no token, public on", public.WSURL, "", nil, 0},
		{"allowed origin", public.WSURL, "", http.Header{"Origin": {"https://app.example.com"}}, 0},
		{"foreign origin", public.WSURL, "", http.Header{"Origin": {"https://evil.example.net"}}, 403},
		{"Directus unreachable", down.WSURL, adminToken, nil, 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := brokertest.DialE(tc.url, tc.token, tc.header)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("want upgrade, got %v", err)
				}
				c.Conn.Close()
				return
			}
			if err == nil {
				c.Conn.Close()
				t.Fatalf("want HTTP %d, got an upgrade", tc.status)
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("want HTTP %d, got %v %v", tc.status, resp, err)
			}
		})
	}
}

// TestJWTLogin: a JWT from /auth/login works like a static token.
func TestJWTLogin(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	var login struct {
		Data struct {
			AccessToken string `json:"access_token"`
		} `json:"data"`
	}
	if _, err := dx.Do(t.Context(), "", http.MethodPost, "/auth/login", map[string]any{"email": "fields@example.com", "password": "user-password"}, &login); err != nil {
		t.Fatal(err)
	}
	c := brokertest.Dial(t, b.WSURL, login.Data.AccessToken)
	f := c.Request(t, map[string]any{"type": "get", "collection": "articles", "query": map[string]any{"limit": 1}, "uid": 1})
	if f["type"] != "RESPONSE" {
		t.Fatalf("JWT get: %v", f)
	}
}

// TestWebsocketDisabled: websocket_enabled=false leaves no endpoint.
func TestWebsocketDisabled(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.WebsocketEnabled = false
	b := brokertest.Start(t, cfg)
	_, resp, err := brokertest.DialE(b.WSURL, adminToken, nil)
	if err == nil || resp == nil || resp.StatusCode != 404 {
		t.Fatalf("want 404, got %v %v", resp, err)
	}
}

// TestConnectionCap: connections beyond max_connections get 503.
func TestConnectionCap(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.MaxConnections = 2
	b := brokertest.Start(t, cfg)
	brokertest.Dial(t, b.WSURL, adminToken)
	brokertest.Dial(t, b.WSURL, adminToken)
	_, resp, err := brokertest.DialE(b.WSURL, adminToken, nil)
	if err == nil || resp == nil || resp.StatusCode != 503 {
		t.Fatalf("want 503 over the cap, got %v %v", resp, err)
	}
}

// TestHeartbeat: the broker pings on its interval.
func TestHeartbeat(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.PingPeriod = 50 * time.Millisecond
	cfg.PongWait = 5 * time.Second
	cfg.DirectusTimeout = 2 * time.Second
	b := brokertest.Start(t, cfg)
	conn, _, err := websocket.DefaultDialer.Dial(b.WSURL, http.Header{"Authorization": {"Bearer " + adminToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pinged := make(chan struct{}, 1)
	conn.SetPingHandler(func(string) error {
		select {
		case pinged <- struct{}{}:
		default:
		}
		return nil
	})
	go func() {
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	select {
	case <-pinged:
	case <-time.After(brokertest.DefaultWait):
		t.Fatal("no ping from the broker")
	}
}

// TestGracefulShutdown: on shutdown, sockets are closed with 1001.
func TestGracefulShutdown(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := brokertest.Dial(t, b.WSURL, adminToken)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
	c.NextOfType(t, "SUBSCRIBED")
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	err := c.Closed(t)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Fatalf("want close 1001, got %v", err)
	}
}

// A client that stops reading does not answer pings: it is closed after
// pong_wait and counted (evictions{reason="pong_timeout"}).
func TestStalledClientCounted(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.PingPeriod = 100 * time.Millisecond
	cfg.PongWait = time.Second
	cfg.DirectusTimeout = 900 * time.Millisecond
	b := brokertest.Start(t, cfg)
	conn, _, err := websocket.DefaultDialer.Dial(b.WSURL, http.Header{"Authorization": {"Bearer " + adminToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetPingHandler(func(string) error { return nil }) // never answers
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			break
		}
	}
	if n := b.Server.Stats().Evictions["pong_timeout"]; n != 1 {
		t.Fatalf("pong_timeout evictions = %d, want 1", n)
	}
}
