//go:build linux

package deploy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/child"
)

// proc is a process a test started: in its own process group (so a stop
// takes everything it forked, nginx's workers included), killed when the
// test binary dies, and stopped by the test's cleanup, failing or not. Its
// stdout and stderr go to a log file that is printed when the test failed.
type proc struct {
	*child.Process
	name string
	log  string
}

// startProc starts argv in dir with exactly env (nothing is inherited).
func startProc(t testing.TB, name, dir string, env []string, argv ...string) *proc {
	return startChild(t, name, dir, env, false, argv...)
}

// startServer is startProc for a program that prints "listening on ADDR";
// Addr waits for it.
func startServer(t testing.TB, name, dir string, env []string, argv ...string) *proc {
	return startChild(t, name, dir, env, true, argv...)
}

func startChild(t testing.TB, name, dir string, env []string, listening bool, argv ...string) *proc {
	t.Helper()
	p := &proc{name: name, log: filepath.Join(dir, name+".log")}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	// The child has its own descriptor; ours closes when the test ends.
	t.Cleanup(func() { logFile.Close() })
	start := child.Start
	if listening {
		start = child.StartListening
	}
	if env == nil {
		env = []string{} // exactly env: nothing inherited
	}
	if p.Process, err = start(name, argv, child.Options{Env: env, Dir: dir, Stdout: logFile, Stderr: logFile, Group: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.name, p.logText())
		}
	})
	return p
}

// stop sends SIGTERM to the process group, then SIGKILL after 20 s;
// idempotent.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	if err := p.Stop(20 * time.Second); err != nil {
		t.Error(err)
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// brokerProc is the broker binary running as a process.
type brokerProc struct {
	*proc
	addr string // 127.0.0.1:PORT
}

// startBroker runs the binary on LISTEN_ADDR=127.0.0.1:0 with DIRECTUS_URL,
// JSON logs and env on top, reads the address it prints, and waits until
// /readyz answers 200.
func startBroker(t testing.TB, name string, env map[string]string) *brokerProc {
	t.Helper()
	vars := map[string]string{
		"PATH": os.Getenv("PATH"), "HOME": os.Getenv("HOME"),
		"LISTEN_ADDR": "127.0.0.1:0", "DIRECTUS_URL": dx.URL, "LOG_FORMAT": "json",
	}
	for k, v := range env {
		vars[k] = v
	}
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	// An empty working directory: no ./config.yaml is picked up.
	b := &brokerProc{proc: startServer(t, name, t.TempDir(), environ, binary)}
	var err error
	if b.addr, err = b.Addr(t.Context(), 30*time.Second); err != nil {
		t.Fatalf("broker %s: %v\n%s", name, err, b.logText())
	}
	waitFor(t, "broker "+name+" /readyz", 30*time.Second, func() bool { return httpStatus("http://"+b.addr+"/readyz") == http.StatusOK })
	return b
}

// httpStatus is the status of a GET of url, 0 when it fails.
func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// freePort returns a port of 127.0.0.1 that was free a moment ago, for
// programs that must be told their port in a configuration file. Callers
// retry when another process took it meanwhile.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// postWebhook posts an update event of key to baseURL's webhook, with the
// secret unless it is empty, and returns the answer's status and body.
func postWebhook(t testing.TB, baseURL, secret, key string) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"event":"%s.items.update","payload":{"title":"x"},"keys":["%s"],"collection":"%s"}`, collection, key, collection)
	req, err := http.NewRequest(http.MethodPost, baseURL+"/webhook", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("X-Webhook-Secret", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s/webhook: %v", baseURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// subscribe connects to wsURL (token "" = the public role) and subscribes
// to the collection, returning once SUBSCRIBED arrived.
func subscribe(t testing.TB, wsURL, token string) *brokertest.Client {
	t.Helper()
	c := brokertest.Dial(t, wsURL, token)
	if f := c.Request(t, map[string]any{"type": "subscribe", "collection": collection, "uid": "s"}); f["type"] != "SUBSCRIBED" {
		t.Fatalf("subscribe through %s: %v", wsURL, f)
	}
	return c
}

// expectUpdate checks that the next event on c is the update of key, with
// the item as Directus has it.
func expectUpdate(t testing.TB, c *brokertest.Client, key, title string) {
	t.Helper()
	f := c.NextOfType(t, "SUBSCRIPTION")
	keys, _ := f["keys"].([]any)
	data, _ := f["data"].([]any)
	if f["action"] != "update" || len(keys) != 1 || keys[0] != key || len(data) != 1 {
		t.Fatalf("want the update of %s, got %v", key, f)
	}
	if item, _ := data[0].(map[string]any); item["title"] != title {
		t.Fatalf("want the item read from Directus (title %q), got %v", title, f)
	}
}

// execOutput runs a short command to completion (at most 5 minutes) and
// returns its combined output. It does not use the test's context, so
// cleanups can call it.
func execOutput(t testing.TB, argv ...string) (string, error) {
	t.Helper()
	return execIn(t, "", nil, argv...)
}

// execIn is execOutput in dir ("": the test's) with exactly env (nil:
// inherited).
func execIn(t testing.TB, dir string, env []string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}
