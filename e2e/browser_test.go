// Package e2e holds end-to-end tests that drive the broker the way a person
// does: a real Directus, an in-process broker, and a real headless Chromium
// loading the broker's test page.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// stepTimeout bounds each browser step: it only matters when the test is
// about to fail, so it is generous.
const stepTimeout = 30 * time.Second

// TestBrowserExamplePage loads /example/test.html in headless Chromium,
// connects with the admin token, subscribes through the page, and sees an
// item created through Directus's REST API (and announced on the webhook)
// arrive in the page's log; then it sends a get frame and sees the RESPONSE.
func TestBrowserExamplePage(t *testing.T) {
	if os.Getenv("DIRECTUS_TESTS") == "0" {
		t.Skip("integration tests disabled (DIRECTUS_TESTS=0)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium not found on PATH (%v): run scripts/ensure-chromium.sh (as root it installs Debian's chromium), or set DIRECTUS_TESTS=0 to skip", err)
	}

	// Directus can take minutes on a cold install; the rest takes seconds.
	startCtx, cancelStart := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancelStart()
	dx, err := directustest.Start(startCtx, directustest.Options{})
	if err != nil {
		t.Fatalf("start Directus: %v", err)
	}
	defer func() {
		if err := dx.Stop(); err != nil {
			t.Errorf("stop Directus: %v", err)
		}
	}()
	if err := dx.CreateCollection(startCtx, "articles", directustest.Field{Name: "title"}); err != nil {
		t.Fatalf("create collection: %v", err)
	}

	cfg := config.Default()
	cfg.DirectusURL = dx.URL
	cfg.WebhookSecret = "s"
	b := brokertest.Start(t, cfg) // stopped by t.Cleanup

	ctx, page := startBrowser(t, chromium)

	// --- load the page and connect -------------------------------------
	step(t, ctx, "open the test page", steps(
		chromedp.Navigate(b.URL+"/example/test.html"),
		chromedp.WaitVisible(chromedp.ID("connect")),
	))
	wsURL := run(t, ctx, "read #url", chromedp.Value(chromedp.ID("url")))
	if wsURL != b.WSURL {
		t.Errorf("default WebSocket URL = %q, want %q (derived from the page's location)", wsURL, b.WSURL)
	}
	step(t, ctx, "connect", steps(
		chromedp.SetValue(chromedp.ID("token"), dx.AdminToken),
		chromedp.Click(chromedp.ID("connect")),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="connected"]`)),
	))

	// --- subscribe with the example button -----------------------------
	step(t, ctx, "fill the subscribe example", chromedp.Click(chromedp.ID("ex-subscribe")))
	frame := run(t, ctx, "read #frame", chromedp.Value(chromedp.ID("frame")))
	if !strings.Contains(frame, `"subscribe"`) || !strings.Contains(frame, `"articles"`) || !strings.Contains(frame, `"sub1"`) {
		t.Fatalf("subscribe example filled #frame with %q", frame)
	}
	step(t, ctx, "send subscribe and wait for SUBSCRIBED", steps(
		chromedp.Click(chromedp.ID("send")),
		chromedp.WaitVisible(chromedp.CSS(`#log .entry.out[data-type="subscribe"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#log .entry.in[data-type="SUBSCRIBED"]`)),
	))

	// --- an item created through REST reaches the page -------------------
	var created struct {
		Data struct {
			ID int `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(t.Context(), dx.AdminToken, "POST", "/items/articles", map[string]any{"title": "from-rest"}, &created); err != nil {
		t.Fatalf("create item through REST: %v", err)
	}
	status, body, err := b.PostWebhook(fmt.Sprintf(`{"event":"articles.items.create","payload":{"title":"from-rest"},"key":%d,"collection":"articles"}`, created.Data.ID))
	if err != nil || status/100 != 2 {
		t.Fatalf("post webhook: HTTP %d %s %v", status, body, err)
	}
	run(t, ctx, "wait for the SUBSCRIPTION frame with from-rest", chromedp.Poll[bool](
		`[...document.querySelectorAll('#log .entry.in.subscription[data-type="SUBSCRIPTION"]')]
			.some(e => e.textContent.includes('"from-rest"') && e.textContent.includes('create'))`,
		chromedp.WithPollingMutation(), chromedp.WithPollingTimeout(stepTimeout)))

	// --- a CRUD frame: get --------------------------------------------
	step(t, ctx, "send get and wait for RESPONSE", steps(
		chromedp.Click(chromedp.ID("ex-get")),
		chromedp.Click(chromedp.ID("send")),
		chromedp.WaitVisible(chromedp.CSS(`#log .entry.in[data-type="RESPONSE"]`)),
	))
	resp := run(t, ctx, "read the RESPONSE", chromedp.TextContent(chromedp.CSS(`#log .entry.in[data-type="RESPONSE"]`)))
	if !strings.Contains(resp, `"get1"`) || !strings.Contains(resp, `"from-rest"`) {
		t.Errorf("RESPONSE entry = %q, want the uid get1 and the item from-rest", resp)
	}
	if errs := run(t, ctx, "count ERROR frames", chromedp.Evaluate[int](`document.querySelectorAll('#log .entry[data-type="ERROR"]').length`)); errs != 0 {
		log := run(t, ctx, "read the log", chromedp.TextContent(chromedp.ID("log")))
		t.Errorf("the log shows %d ERROR frames:\n%s", errs, log)
	}

	// --- a screenshot, to look at (go test -artifacts keeps it) ----------
	png := run(t, ctx, "screenshot", chromedp.CaptureScreenshot())
	shot := filepath.Join(t.ArtifactDir(), "test-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatalf("write screenshot: %v", err)
	}
	t.Logf("screenshot: %s", shot)

	step(t, ctx, "disconnect", steps(
		chromedp.Click(chromedp.ID("disconnect")),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-state="disconnected"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#send:disabled`)),
	))

	if exc := page.exceptions(); len(exc) > 0 {
		t.Errorf("uncaught JavaScript exceptions in the page:\n%s", strings.Join(exc, "\n"))
	}
}

// browserPage collects what the page reports by itself.
type browserPage struct {
	mu     sync.Mutex
	thrown []string
	output lockedBuffer // chromium's stdout and stderr
}

func (p *browserPage) listen(ev any) {
	if e, ok := ev.(*runtime.EventExceptionThrown); ok && e.ExceptionDetails != nil {
		d := e.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		p.mu.Lock()
		p.thrown = append(p.thrown, fmt.Sprintf("%s:%d:%d %s", d.URL, d.LineNumber+1, d.ColumnNumber+1, msg))
		p.mu.Unlock()
	}
}

func (p *browserPage) exceptions() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.thrown...)
}

// startBrowser starts headless Chromium with a fresh profile and opens a
// tab. The browser is killed and waited for when the test ends (also on
// failure), before its profile directory is removed.
func startBrowser(t *testing.T, chromium string) (context.Context, *browserPage) {
	t.Helper()
	page := &browserPage{}
	profile := t.TempDir() // removed after the cleanups below (LIFO)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1400, 1000),
		// A closed network: nothing may try to reach the outside.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.CombinedOutput(&page.output),
	)
	t.Cleanup(cancelAlloc) // cancels and waits for the browser process
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(page.listen))
	t.Cleanup(cancel)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chromium output:\n%s", page.output.String())
		}
	})
	// The first run starts the browser, which lives as long as the context
	// of that run: so it gets no timeout; the steps below do.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v\n%s", err, page.output.String())
	}
	return ctx, page
}

// steps joins actions.
func steps(actions ...chromedp.Action[chromedp.Void]) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(actions...)
}

// step runs an action bounded by stepTimeout, failing the test with what
// was being done.
func step(t *testing.T, ctx context.Context, what string, a chromedp.Action[chromedp.Void]) {
	t.Helper()
	run(t, ctx, what, a)
}

// run runs an action that returns a value, bounded by stepTimeout.
func run[T any](t *testing.T, ctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(sctx, a)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("not done within %s: %w", stepTimeout, err)
		}
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		logText, _ := chromedp.Run(lctx, chromedp.Evaluate[string](`(document.getElementById('log')||{}).innerText||''`))
		lcancel()
		t.Fatalf("%s: %v\npage log:\n%s", what, err, logText)
	}
	return v
}

// lockedBuffer is a bytes.Buffer safe for the browser's output goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
