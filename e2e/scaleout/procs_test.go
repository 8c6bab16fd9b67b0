//go:build linux

package scaleout

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// brokerProc is one broker process started from the built binary.
type brokerProc struct {
	Name  string
	URL   string // http://127.0.0.1:PORT
	WSURL string
	cmd   *exec.Cmd
	log   string // its stderr, kept in a file
	exit  chan struct{}
}

// startBroker runs the binary with env (on top of LISTEN_ADDR=127.0.0.1:0,
// DIRECTUS_URL, WEBHOOK_SECRET and JSON logs), waits until /readyz answers
// 200, and stops it when the test ends, failing or not. Its log is printed
// when the test failed.
func startBroker(t testing.TB, name string, env map[string]string) *brokerProc {
	t.Helper()
	dir := t.TempDir()
	p := &brokerProc{Name: name, log: filepath.Join(dir, "broker.log"), exit: make(chan struct{})}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
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
	p.cmd = exec.Command(binary)
	p.cmd.Dir = dir
	for k, v := range vars {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stderr = logFile
	// Its own process group, so Kill takes everything it started; and it
	// dies with the test binary even when cleanups never run.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("log of broker %s:\n%s", p.Name, b)
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				addr <- a
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = p.cmd.Wait()
		close(p.exit)
	}()
	select {
	case a := <-addr:
		p.URL, p.WSURL = "http://"+a, "ws://"+a+"/websocket"
	case <-p.exit:
		t.Fatalf("broker %s exited before listening", name)
	case <-time.After(30 * time.Second):
		t.Fatalf("broker %s did not print its address within 30s", name)
	}
	waitReady(t, p)
	return p
}

// Stop ends the broker gracefully (SIGTERM), then forcibly; idempotent.
func (p *brokerProc) Stop(t testing.TB) {
	t.Helper()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(20 * time.Second):
		t.Errorf("broker %s ignored SIGTERM for 20s; killing it", p.Name)
		p.Kill(t)
	}
}

// Kill ends the broker at once (SIGKILL to its process group), as a crash
// or an OOM kill would, and waits until it is gone.
func (p *brokerProc) Kill(t testing.TB) {
	t.Helper()
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exit:
	case <-time.After(20 * time.Second):
		t.Fatalf("broker %s still running 20s after SIGKILL", p.Name)
	}
}

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
