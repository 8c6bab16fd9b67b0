//go:build linux

package scaleout

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/child"
)

// brokerProc is one broker process started from the built binary.
type brokerProc struct {
	Name  string
	URL   string // http://127.0.0.1:PORT
	WSURL string
	c     *child.Process
	log   string // its output, kept in a file
}

// startBroker runs the binary with env (on top of LISTEN_ADDR=127.0.0.1:0,
// DIRECTUS_URL, WEBHOOK_SECRET and JSON logs), waits until /readyz answers
// 200, and stops it when the test ends, failing or not. Its log is printed
// when the test failed.
func startBroker(t testing.TB, name string, env map[string]string) *brokerProc {
	t.Helper()
	dir := t.TempDir()
	p := &brokerProc{Name: name, log: filepath.Join(dir, "broker.log")}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	// Only what the test says: no CONFIG_FILE, BUS or the like leaks in
	// from the caller's environment, and no ./config.yaml is found (cwd is
	// an empty directory).
	vars := map[string]string{
		"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME"),
		"LISTEN_ADDR": "127.0.0.1:0", "DIRECTUS_URL": dx.URL, "WEBHOOK_SECRET": secret,
		"LOG_FORMAT": "json", "LOG_LEVEL": "info",
	}
	for k, v := range env {
		vars[k] = v
	}
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	// Its own process group, so Kill takes everything it started.
	p.c, err = child.StartListening("broker "+name, []string{binary}, child.Options{Env: environ, Dir: dir, Stdout: logFile, Stderr: logFile, Group: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("log of broker %s:\n%s", p.Name, b)
		}
	})
	addr, err := p.c.Addr(t.Context(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	p.URL, p.WSURL = "http://"+addr, "ws://"+addr+"/websocket"
	waitReady(t, p)
	return p
}

// Stop ends the broker gracefully (SIGTERM), then forcibly; idempotent.
func (p *brokerProc) Stop(t testing.TB) {
	t.Helper()
	if err := p.c.Stop(20 * time.Second); err != nil {
		t.Error(err)
	}
}

// Kill ends the broker at once (SIGKILL to its process group), as a crash
// or an OOM kill would, and waits until it is gone.
func (p *brokerProc) Kill(t testing.TB) { p.c.Kill() }

// ready reports whether /readyz answers 200 (Directus and the bus usable).
func (p *brokerProc) ready() bool {
	resp, err := http.Get(p.URL + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitReady polls /readyz of every broker until each answers 200, failing
// after a bounded deadline.
func waitReady(t testing.TB, brokers ...*brokerProc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range brokers {
		for !p.ready() {
			if time.Now().After(deadline) {
				t.Fatalf("broker %s not ready within 30s", p.Name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// post posts an item event to p's webhook and returns the status and the
// event id (on 202).
func (p *brokerProc) post(t testing.TB, collection, action, key string) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"event":"%s.items.%s","payload":{"title":"t"},"keys":["%s"],"collection":"%s"}`, collection, action, key, collection)
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/webhook", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Secret", secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post to broker %s: %v", p.Name, err)
	}
	defer resp.Body.Close()
	var out struct {
		IDs []string `json:"ids"`
	}
	if resp.StatusCode == http.StatusAccepted {
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.IDs) != 1 {
			t.Fatalf("broker %s: 202 without one id (%v)", p.Name, err)
		}
		return resp.StatusCode, out.IDs[0]
	}
	return resp.StatusCode, ""
}

// mustPost is post requiring 202.
func (p *brokerProc) mustPost(t testing.TB, collection, key string) string {
	t.Helper()
	status, id := p.post(t, collection, "update", key)
	if status != http.StatusAccepted {
		t.Fatalf("post to broker %s: HTTP %d", p.Name, status)
	}
	return id
}

// subscribe connects to p as token and subscribes to collection (since ""
// means no resume), returning once SUBSCRIBED arrived.
func subscribe(t testing.TB, p *brokerProc, token, collection, since string) *brokertest.Client {
	t.Helper()
	c := brokertest.Dial(t, p.WSURL, token)
	frame := map[string]any{"type": "subscribe", "collection": collection, "uid": collection}
	if since != "" {
		frame["since"] = since
	}
	if f := c.Request(t, frame); f["type"] != "SUBSCRIBED" {
		t.Fatalf("subscribe to %s on broker %s: %v", collection, p.Name, f)
	}
	return c
}

// expectEvents checks that the next frames are exactly the events ids, in
// order.
func expectEvents(t testing.TB, c *brokertest.Client, who string, ids []string) {
	t.Helper()
	for i, want := range ids {
		f := c.Next(t)
		if f["type"] != "SUBSCRIPTION" || f["id"] != want {
			t.Fatalf("%s: event %d of %d: want id %s, got %v", who, i+1, len(ids), want, f)
		}
	}
}

// expectGap checks that the next frame is the HISTORY_GAP error.
func expectGap(t testing.TB, c *brokertest.Client, who string) {
	t.Helper()
	f := c.Next(t)
	data, _ := f["data"].(map[string]any)
	if f["type"] != "ERROR" || data["code"] != "HISTORY_GAP" {
		t.Fatalf("%s: want a HISTORY_GAP error, got %v", who, f)
	}
}

// metrics returns p's /metrics page.
func (p *brokerProc) metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get(p.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
