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

// TestWebhookWithoutSecretOnlyLoopback: with no secret configured, the
// webhook refuses senders that are not on this host. The remote address is
// set on the request object: no traffic leaves loopback.
func TestWebhookWithoutSecretOnlyLoopback(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.WebhookSecret = ""
	a, err := app.New(cfg, zerolog.Nop(), metrics.Build{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Broker.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Broker.Close()
	srv := a.Server
	body := `{"event":"articles.items.delete","keys":["1"],"collection":"articles"}`
	for _, tc := range []struct {
		remote, forwarded string
		want              int
	}{{"203.0.113.7:5000", "", 401}, {"127.0.0.1:5000", "", 202}, {"[::1]:5000", "", 202}, {"127.0.0.1:5000", "203.0.113.7", 401}} {
		remote, want := tc.remote, tc.want
		req := httptest.NewRequest(http.MethodPost, cfg.WebhookPath, strings.NewReader(body))
		req.RemoteAddr = remote
		if tc.forwarded != "" {
			req.Header.Set("X-Forwarded-For", tc.forwarded) // relayed by a proxy on this host
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("from %s: want %d, got %d %s", remote, want, rec.Code, rec.Body)
		}
	}
}
