package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/child"
)

// brokerProc is one broker process (bin/directus-ws-broker).
type brokerProc struct {
	addr string
	c    *child.Process
	log  *logTail
}

// startBroker runs the broker with env (on top of the chaos defaults) and
// waits for its "listening on" line.
func (c *chaos) startBroker(ctx context.Context, env ...string) (*brokerProc, error) {
	base := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"LISTEN_ADDR=127.0.0.1:0", "DIRECTUS_URL=" + c.dx.URL, "WEBHOOK_SECRET=" + webhookSecret,
		"LOG_LEVEL=warn", "LOG_FORMAT=json", "CONFIG_FILE=", "BUS=memory",
	}
	p := &brokerProc{log: &logTail{}}
	var err error
	// In the scratch directory: no ./config.yaml there.
	p.c, err = child.StartListening("broker", []string{c.broker}, child.Options{Env: append(base, env...), Dir: c.work, Stderr: p.log})
	if err != nil {
		return nil, err
	}
	if p.addr, err = p.c.Addr(ctx, 30*time.Second); err != nil {
		p.kill()
		return nil, fmt.Errorf("%w:\n%s", err, p.log)
	}
	return p, nil
}

func (p *brokerProc) wsURL() string       { return "ws://" + p.addr + "/websocket" }
func (p *brokerProc) realtimeURL() string { return "ws://" + p.addr + "/realtime" }
func (p *brokerProc) webhookURL() string  { return "http://" + p.addr + "/webhook" }

// terminate sends SIGTERM and waits up to limit for the exit (then kills).
func (p *brokerProc) terminate(limit time.Duration) error { return p.c.Stop(limit) }

func (p *brokerProc) kill() { p.c.Kill() }

// rss is the broker's resident memory in bytes.
func (p *brokerProc) rss() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.c.Pid()))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// metric is the sum of the broker's /metrics samples of name whose labels
// contain every one of labels (`code="X"`); -1 when unreachable.
func (p *brokerProc) metric(name string, labels ...string) float64 {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		end := strings.IndexAny(line, "{ ")
		if line == "" || line[0] == '#' || end < 0 || line[:end] != name {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// settle waits until the broker has dispatched everything it took and
// written it out (or limit passes).
func (p *brokerProc) settle(limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if p.metric("broker_dispatch_queue_depth") == 0 && p.metric("broker_send_queue_bytes") == 0 &&
			p.metric("broker_dispatch_lag_seconds") == 0 {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// state is what settle looks at, for error messages.
func (p *brokerProc) state() string {
	return fmt.Sprintf("queue depth %.0f, send queue %.0f bytes, lag %.2fs",
		p.metric("broker_dispatch_queue_depth"), p.metric("broker_send_queue_bytes"), p.metric("broker_dispatch_lag_seconds"))
}

// logTail keeps the end of the broker's log.
type logTail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *logTail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > 64<<10 {
		t.buf = t.buf[len(t.buf)-32<<10:]
	}
	return len(b), nil
}

func (t *logTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
