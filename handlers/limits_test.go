package handlers_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// refusedWith dials url and expects the upgrade to be refused with status
// and the JSON error code.
func refusedWith(t *testing.T, url, token string, header http.Header, status int, code string) {
	t.Helper()
	c, resp, err := brokertest.DialE(url, token, header)
	if err == nil {
		c.Conn.Close()
		t.Fatalf("dial accepted, want %d %s", status, code)
	}
	if resp == nil || resp.StatusCode != status {
		t.Fatalf("dial: want HTTP %d, got %v (%v)", status, resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code != code {
		t.Fatalf("dial: want code %s, got %s", code, body)
	}
}

// One user cannot take every connection slot: past
// max_connections_per_user the upgrade is refused (429), other users still
// connect.
func TestConnectionsPerUser(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.MaxConnectionsPerUser = 2
	b := brokertest.Start(t, cfg)
	brokertest.Dial(t, b.WSURL, adminToken)
	brokertest.Dial(t, b.WSURL, adminToken)
	refusedWith(t, b.WSURL, adminToken, nil, http.StatusTooManyRequests, "TOO_MANY_CONNECTIONS")
	brokertest.Dial(t, b.WSURL, fieldsToken)
}

// Sockets that never authenticate are bounded per source address
// (max_anonymous_per_address); an auth frees the address's slot; behind a
// trusted proxy the address is the one X-Forwarded-For names, and from
// anyone else that header is ignored.
func TestAnonymousPerAddress(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.MaxAnonymousPerAddress = 2
	b := brokertest.Start(t, cfg)
	first := rtDial(t, b, "")
	rtDial(t, b, "")
	refusedWith(t, rtURL(b), "", nil, http.StatusTooManyRequests, "TOO_MANY_CONNECTIONS")
	spoofed := http.Header{"X-Forwarded-For": {"203.0.113.9"}}
	refusedWith(t, rtURL(b), "", spoofed, http.StatusTooManyRequests, "TOO_MANY_CONNECTIONS")
	rtAuth(t, first, adminToken)
	rtDial(t, b, "") // the slot first held

	cfg.TrustedProxies = []string{"127.0.0.1"}
	behind := brokertest.Start(t, cfg)
	client := func(addr string) http.Header { return http.Header{"X-Forwarded-For": {addr}} }
	for range 2 {
		c, _, err := brokertest.DialE(rtURL(behind), "", client("203.0.113.1"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Conn.Close()
	}
	refusedWith(t, rtURL(behind), "", client("203.0.113.1"), http.StatusTooManyRequests, "TOO_MANY_CONNECTIONS")
	if c, _, err := brokertest.DialE(rtURL(behind), "", client("203.0.113.2")); err != nil {
		t.Fatalf("another client behind the proxy: %v", err)
	} else {
		c.Conn.Close()
	}
}
