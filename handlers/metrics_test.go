package handlers_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/scripttest"
)

// scrape reads url's Prometheus text.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return string(body)
}

// sample is the value of the series whose line starts with series.
func sample(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return v
		}
	}
	t.Fatalf("no series %s in:\n%s", series, text)
	return 0
}

// TestMetrics: /metrics is client_golang's text, passes the Prometheus
// linter (promlint, and promtool check metrics when Debian's prometheus
// package can be installed), and after a delivery the latency histograms,
// the Directus request histogram, the connection gauge and the webhook
// counter moved. With admin_addr it is served there, not on the public
// port.
func TestMetrics(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.AdminAddr = "127.0.0.1:0"
	b := brokertest.Start(t, cfg)
	c := brokertest.Dial(t, b.WSURL, adminToken)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
	c.NextOfType(t, "SUBSCRIBED")
	admin := "http://" + b.Server.AdminAddr()
	before := scrape(t, admin+"/metrics")
	deliveries := sample(t, before, "broker_delivery_seconds_count")

	id := createItem(t, "articles", map[string]any{"title": "metered", "status": "published"})
	if status, out := postWebhook(t, b, flowBody("create", id, `{"title":"metered"}`)); status != 202 {
		t.Fatalf("webhook %d %s", status, out)
	}
	b.Settle(t)
	c.NextOfType(t, "SUBSCRIPTION")
	text := scrape(t, admin+"/metrics")
	if n := sample(t, text, "broker_delivery_seconds_count"); n != deliveries+1 {
		t.Fatalf("broker_delivery_seconds_count %v after one delivery (was %v)", n, deliveries)
	}
	for series, least := range map[string]float64{
		`broker_directus_request_seconds_count{kind="read",outcome="ok"}`:                      1,
		`broker_directus_request_seconds_count{kind="check",outcome="ok"}`:                     1,
		`broker_directus_request_seconds_count{kind="auth",outcome="ok"}`:                      1,
		`broker_connections{protocol="extension"}`:                                             1,
		`broker_webhook_requests_total{status="202"}`:                                          1,
		`broker_events_published_total`:                                                        1,
		`broker_subscriptions`:                                                                 1,
		`broker_build_info{commit="test",goversion="` + runtimeVersion() + `",version="test"}`: 1,
	} {
		if v := sample(t, text, series); v < least {
			t.Errorf("%s = %v, want at least %v", series, v, least)
		}
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "broker_dispatch_lag_seconds", "broker_send_queue_bytes"} {
		if !strings.Contains(text, "\n"+name+" ") {
			t.Errorf("no %s", name)
		}
	}
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil || len(problems) > 0 {
		t.Fatalf("promlint: %v %v", problems, err)
	}
	if script, err := scripttest.Find("ensure-promtool.sh"); err == nil {
		if _, err := scripttest.Run(context.Background(), script, "install"); err == nil {
			cmd := exec.Command("promtool", "check", "metrics")
			cmd.Stdin = strings.NewReader(text)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
			}
		} else {
			t.Logf("promtool unavailable (%v): promlint only", err)
		}
	}
	// The public port does not serve them when there is an admin listener.
	resp, err := http.Get(b.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("public /metrics with admin_addr: %d", resp.StatusCode)
	}
}

func runtimeVersion() string { return runtime.Version() }
