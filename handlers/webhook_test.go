package handlers_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/internal/app"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/metrics"
)

func post(t *testing.T, url, body string, header map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(out)
}

// TestWebhookAnswers checks every answer of the webhook and that a refused
// request publishes nothing.
func TestWebhookAnswers(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.WebhookMaxBody = 2048
	b := brokertest.Start(t, cfg)
	id := createItem(t, "articles", map[string]any{"title": "w", "status": "published"})
	sub := brokertest.Dial(t, b.WSURL, adminToken)
	sub.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
	sub.NextOfType(t, "SUBSCRIBED")

	url := b.URL + cfg.WebhookPath
	good := fmt.Sprintf(`{"event":"articles.items.update","payload":{"title":"w"},"keys":["%v"],"collection":"articles"}`, id)
	withSecret := map[string]string{"X-Webhook-Secret": secret}
	cases := []struct {
		name   string
		body   string
		header map[string]string
		status int
		want   string
	}{
		{"no secret", good, nil, 401, "UNAUTHORIZED"},
		{"wrong secret", good, map[string]string{"X-Webhook-Secret": "nope"}, 401, "UNAUTHORIZED"},
		{"wrong bearer", good, map[string]string{"Authorization": "Bearer nope"}, 401, "UNAUTHORIZED"},
		{"malformed JSON", `{"event":`, withSecret, 400, "INVALID_PAYLOAD"},
		{"not an item event", `{"event":"files.upload"}`, withSecret, 422, "not an item event"},
		{"batch with one bad event", `[` + good + `,{"action":"nope"}]`, withSecret, 422, "event 1"},
		{"too large", `{"pad":"` + strings.Repeat("x", 4096) + `"}`, withSecret, 413, "PAYLOAD_TOO_LARGE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := post(t, url, tc.body, tc.header)
			if status != tc.status || !strings.Contains(body, tc.want) {
				t.Fatalf("want %d %q, got %d %s", tc.status, tc.want, status, body)
			}
		})
	}
	b.Settle(t)
	sub.Quiet(t, "nothing-published")

	status, body := post(t, url, `[`+good+`,`+good+`]`, map[string]string{"Authorization": "Bearer " + secret})
	if status != 202 || !strings.Contains(body, `"accepted":2`) {
		t.Fatalf("want 202 accepted 2, got %d %s", status, body)
	}
	for range 2 {
		if f := sub.NextOfType(t, "SUBSCRIPTION"); f["action"] != "update" {
			t.Fatalf("unexpected event %v", f)
		}
	}
}

// TestWebhookWithoutSecret: without a secret the webhook takes nothing,
// unless webhook_insecure_loopback is on; then it takes a Flow's POST from
// this host only — never one relayed by a proxy (X-Forwarded-For, Via,
// CF-Connecting-IP...), never one shaped like a browser's (an Origin, a
// text/plain body, Sec-Fetch headers: a page on this host could otherwise
// post forged deletes), never one for another Host (DNS rebinding). The
// remote address is set on the request object: no traffic leaves loopback.
func TestWebhookWithoutSecret(t *testing.T) {
	body := `{"event":"articles.items.delete","keys":["1"],"collection":"articles"}`
	type tc struct {
		name    string
		remote  string
		host    string
		headers map[string]string
		want    int
	}
	json := map[string]string{"Content-Type": "application/json"}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{"Content-Type": "application/json"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	cases := []tc{
		{"a Flow on this host", "127.0.0.1:5000", "127.0.0.1:8080", json, 202},
		{"IPv6 loopback, localhost", "[::1]:5000", "localhost:8080", json, 202},
		{"another host", "203.0.113.7:5000", "127.0.0.1:8080", json, 401},
		{"relayed: X-Forwarded-For", "127.0.0.1:5000", "127.0.0.1:8080", with(map[string]string{"X-Forwarded-For": "203.0.113.7"}), 401},
		{"relayed: Via", "127.0.0.1:5000", "127.0.0.1:8080", with(map[string]string{"Via": "1.1 proxy"}), 401},
		{"relayed: CF-Connecting-IP", "127.0.0.1:5000", "127.0.0.1:8080", with(map[string]string{"CF-Connecting-IP": "203.0.113.7"}), 401},
		{"relayed: True-Client-IP", "127.0.0.1:5000", "127.0.0.1:8080", with(map[string]string{"True-Client-IP": "203.0.113.7"}), 401},
		{"relayed: X-Client-IP", "127.0.0.1:5000", "127.0.0.1:8080", with(map[string]string{"X-Client-IP": "203.0.113.7"}), 401},
		{"browser: Origin", "127.0.0.1:5000", "127.0.0.1:8080", with(map[string]string{"Origin": "http://127.0.0.1:8080"}), 401},
		{"browser: text/plain", "127.0.0.1:5000", "127.0.0.1:8080", map[string]string{"Content-Type": "text/plain"}, 401},
		{"browser: Sec-Fetch-Mode", "127.0.0.1:5000", "127.0.0.1:8080", with(map[string]string{"Sec-Fetch-Mode": "no-cors"}), 401},
		{"DNS rebinding: another Host", "127.0.0.1:5000", "attacker.example:8080", json, 401},
	}
	for _, optIn := range []bool{true, false} {
		cfg := brokerConfig(t)
		cfg.WebhookSecret = ""
		cfg.WebhookInsecureLoopback = optIn
		a, err := app.New(cfg, zerolog.Nop(), metrics.Build{})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Broker.Start(); err != nil {
			t.Fatal(err)
		}
		for _, c := range cases {
			req := httptest.NewRequest(http.MethodPost, cfg.WebhookPath, strings.NewReader(body))
			req.RemoteAddr, req.Host = c.remote, c.host
			for k, v := range c.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			a.Server.Handler().ServeHTTP(rec, req)
			want := c.want
			if !optIn {
				want = 401 // without a secret and without the opt-in: nothing
			}
			if rec.Code != want {
				t.Errorf("opt-in %v, %s: want %d, got %d %s", optIn, c.name, want, rec.Code, rec.Body)
			}
		}
		_ = a.Broker.Close()
	}
}
