package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// These tests run `flow install|remove` through run(), as main does,
// against one real Directus (11.17.4) shared by the package's tests.

var (
	flowDX     *directustest.Instance
	flowDXOnce sync.Once
	flowDXErr  error
)

// editorToken is the static token of a user whose role may read articles
// but is not an admin.
const editorToken = "flow-editor-token"

func TestMain(m *testing.M) {
	code := m.Run()
	if flowDX != nil {
		_ = flowDX.Stop()
	}
	os.Exit(code)
}

// requireFlowDirectus starts the shared Directus on first use, so tests that
// need none do not pay for it, and skips when DIRECTUS_TESTS=0.
func requireFlowDirectus(t *testing.T) *directustest.Instance {
	t.Helper()
	flowDXOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		flowDX, flowDXErr = directustest.Start(ctx, directustest.Options{Version: "11.17.4"})
		if flowDXErr != nil {
			return
		}
		for _, c := range []string{"articles", "tags"} {
			if flowDXErr = flowDX.CreateCollection(ctx, c, directustest.Field{Name: "title"}); flowDXErr != nil {
				return
			}
		}
		role, err := flowDX.CreateRoleWithReadPolicy(ctx, "editor", "articles", nil, nil)
		if err == nil {
			_, err = flowDX.CreateUser(ctx, "editor@example.com", editorToken, role)
		}
		flowDXErr = err
	})
	if errors.Is(flowDXErr, directustest.ErrDisabled) {
		t.Skip("DIRECTUS_TESTS=0: integration test skipped")
	}
	if flowDXErr != nil {
		t.Fatalf("starting Directus: %v", flowDXErr)
	}
	return flowDX
}

type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command line args with env as the environment and
// reports what a user would see: stdout, stderr (with the error line main
// prints) and the exit status.
func runCLI(t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, args, func(k string) string { return env[k] }, &stdout, &stderr)
	res := cliResult{}
	if err != nil {
		fmt.Fprintln(&stderr, "directus-ws-broker:", err)
		res.code = processExitCode(err)
	}
	res.stdout, res.stderr = stdout.String(), stderr.String()
	t.Logf("%v -> exit %d\nstdout:\n%sstderr:\n%s", args, res.code, res.stdout, res.stderr)
	return res
}

// processExitCode is the status the process exits with for err: main's
// exitCode, honouring errors that carry their own status (exit 3 of a
// failed --check-collection).
func processExitCode(err error) int {
	var ec interface{ ExitCode() int }
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return exitCode(err)
}

// adminEnv is the environment of an install against dx as admin.
func adminEnv(dx *directustest.Instance) map[string]string {
	return map[string]string{"DIRECTUS_URL": dx.URL, "DIRECTUS_ADMIN_TOKEN": dx.AdminToken}
}

type flowOperation struct {
	ID      string         `json:"id"`
	Key     string         `json:"key"`
	Type    string         `json:"type"`
	Options map[string]any `json:"options"`
}

type flowRecord struct {
	ID             string          `json:"id"`
	Name           string          `json:"name"`
	Status         string          `json:"status"`
	Trigger        string          `json:"trigger"`
	Accountability string          `json:"accountability"`
	Operation      *string         `json:"operation"`
	Options        map[string]any  `json:"options"`
	Operations     []flowOperation `json:"operations"`
}

// flowsNamed reads the Flows named name with their operations.
func flowsNamed(t *testing.T, dx *directustest.Instance, name string) []flowRecord {
	t.Helper()
	q := url.Values{"filter[name][_eq]": {name}, "fields": {"*,operations.*"}, "limit": {"-1"}}
	var out struct {
		Data []flowRecord `json:"data"`
	}
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodGet, "/flows?"+q.Encode(), nil, &out); err != nil {
		t.Fatal(err)
	}
	return out.Data
}

// countOf counts the rows of a system collection or items path.
func countOf(t *testing.T, dx *directustest.Instance, path string) int {
	t.Helper()
	var out struct {
		Data []map[string]any `json:"data"`
	}
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodGet, path+"?fields=id&limit=-1", nil, &out); err != nil {
		t.Fatal(err)
	}
	return len(out.Data)
}

// removeAfter removes the Flow name when the test ends, so the shared
// Directus does not keep posting events for it.
func removeAfter(t *testing.T, dx *directustest.Instance, name string) {
	t.Cleanup(func() {
		if r := runCLI(t, adminEnv(dx), "flow", "remove", "--name", name); r.code != 0 {
			t.Errorf("cleanup: flow remove exited %d", r.code)
		}
	})
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func lines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestFlowInstallCreatesActiveFlow(t *testing.T) {
	dx := requireFlowDirectus(t)
	const name, secret = "flow-test-create", "topsecret-value"
	removeAfter(t, dx, name)
	env := adminEnv(dx)
	env["BROKER_URL"] = "http://127.0.0.1:9" // no path: /webhook is appended
	env["WEBHOOK_SECRET"] = secret
	r := runCLI(t, env, "flow", "install", "--name", name, "--collections", "articles,tags")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if strings.Contains(r.stdout, secret) || strings.Contains(r.stdout, dx.AdminToken) {
		t.Errorf("output shows the secret or the token:\n%s", r.stdout)
	}

	flows := flowsNamed(t, dx, name)
	if len(flows) != 1 {
		t.Fatalf("%d flows named %s, want 1", len(flows), name)
	}
	f := flows[0]
	if f.Status != "active" || f.Trigger != "event" || f.Accountability != "" {
		t.Errorf("flow status %q trigger %q accountability %q, want active, event, null (no logging)", f.Status, f.Trigger, f.Accountability)
	}
	if got := fmt.Sprint(f.Options); got != "map[collections:[articles tags directus_users directus_roles directus_policies directus_access directus_permissions directus_relations] scope:[items.create items.update items.delete] type:action]" {
		t.Errorf("flow options = %s", got)
	}
	if len(f.Operations) != 1 {
		t.Fatalf("flow has %d operations, want 1", len(f.Operations))
	}
	op := f.Operations[0]
	if f.Operation == nil || *f.Operation != op.ID {
		t.Errorf("flow starts with operation %v, want %s", f.Operation, op.ID)
	}
	if op.Type != "request" {
		t.Errorf("operation type %q, want request", op.Type)
	}
	want := "map[body:{{$trigger}} headers:[map[header:X-Webhook-Secret value:" + secret + "]] method:POST url:http://127.0.0.1:9/webhook]"
	if got := fmt.Sprint(op.Options); got != want {
		t.Errorf("operation options = %s\nwant %s", got, want)
	}
	for _, line := range []string{
		"created flow " + f.ID + ` "` + name + `" (active, no activity logging): item create, update, delete on articles, tags; access changes of directus_users, directus_roles, directus_policies, directus_access, directus_permissions, directus_relations`,
		"operation " + op.ID + " posts to http://127.0.0.1:9/webhook with the secret in X-Webhook-Secret",
	} {
		if !strings.Contains(r.stdout, line+"\n") {
			t.Errorf("stdout lacks the line %q", line)
		}
	}
}

func TestFlowInstallTwiceUpdatesInPlace(t *testing.T) {
	dx := requireFlowDirectus(t)
	const name = "flow-test-twice"
	removeAfter(t, dx, name)
	r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--collections", "articles",
		"--broker-url", "http://127.0.0.1:9/webhook", "--secret", "first-secret")
	if r.code != 0 {
		t.Fatalf("first install exited %d", r.code)
	}
	first := flowsNamed(t, dx, name)
	if len(first) != 1 || len(first[0].Operations) != 1 {
		t.Fatalf("after the first install: %+v", first)
	}

	// Second run: another URL, no secret, no collections (all, those
	// created later too).
	r = runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--broker-url", "http://127.0.0.1:10/hooks/directus")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("second install exited %d, stderr %q", r.code, r.stderr)
	}
	flows := flowsNamed(t, dx, name)
	if len(flows) != 1 {
		t.Fatalf("%d flows named %s after two installs, want 1", len(flows), name)
	}
	f := flows[0]
	if f.ID != first[0].ID {
		t.Errorf("flow id changed from %s to %s: not updated in place", first[0].ID, f.ID)
	}
	if len(f.Operations) != 1 || f.Operations[0].ID != first[0].Operations[0].ID {
		t.Fatalf("operations %+v, want the one operation %s updated", f.Operations, first[0].Operations[0].ID)
	}
	if got := fmt.Sprint(f.Options["collections"], f.Options["scope"]); got != "[directus_users directus_roles directus_policies directus_access directus_permissions directus_relations] [items.create items.update items.delete *.items.create *.items.update *.items.delete]" {
		t.Errorf("collections and scope = %s, want the access collections and every collection's item events", got)
	}
	if got := fmt.Sprint(f.Operations[0].Options); got != "map[body:{{$trigger}} headers:[] method:POST url:http://127.0.0.1:10/hooks/directus]" {
		t.Errorf("operation options = %s", got)
	}
	if !strings.Contains(r.stdout, "updated flow "+f.ID) || !strings.Contains(r.stdout, "on every collection (those created later too)") {
		t.Errorf("stdout does not say it updated the flow and watches every collection:\n%s", r.stdout)
	}
}

func TestFlowInstallBadInputChangesNothing(t *testing.T) {
	dx := requireFlowDirectus(t)
	const name = "flow-test-bad"
	dead := "http://" + closedPort(t)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string // the stderr line
	}{
		{"Directus unreachable", map[string]string{"DIRECTUS_URL": dead, "DIRECTUS_ADMIN_TOKEN": dx.AdminToken}, nil, 1,
			"cannot reach Directus at " + dead + ": connect: connection refused"},
		{"token refused", map[string]string{"DIRECTUS_URL": dx.URL, "DIRECTUS_ADMIN_TOKEN": "no-such-token"}, nil, 1,
			"token refused by Directus"},
		{"token not admin", map[string]string{"DIRECTUS_URL": dx.URL, "DIRECTUS_ADMIN_TOKEN": editorToken}, nil, 1,
			"token is not an admin token"},
		{"unknown collection", adminEnv(dx), []string{"--collections", "articles,nope"}, 1,
			"unknown collection nope"},
		{"system collection", adminEnv(dx), []string{"--collections", "directus_users"}, 2,
			"flow install: collection directus_users is a Directus system collection: its changes are not item events"},
		{"no token", map[string]string{"DIRECTUS_URL": dx.URL}, nil, 2,
			"flow install: --token (or DIRECTUS_ADMIN_TOKEN) is required"},
		{"bad broker url", adminEnv(dx), []string{"--broker-url", "127.0.0.1:8080"}, 2,
			`flow install: --broker-url "127.0.0.1:8080": must be an absolute http(s) URL`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := countOf(t, dx, "/flows")
			args := append([]string{"flow", "install", "--name", name, "--broker-url", "http://127.0.0.1:9/webhook", "--secret", "s"}, tt.args...)
			r := runCLI(t, tt.env, args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d", r.code, tt.code)
			}
			if got := lines(r.stderr); len(got) != 1 || got[0] != "directus-ws-broker: "+tt.want {
				t.Errorf("stderr = %q, want the one line %q", got, "directus-ws-broker: "+tt.want)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			if after := countOf(t, dx, "/flows"); after != before {
				t.Errorf("%d flows before, %d after: the bad input changed Directus", before, after)
			}
			if n := len(flowsNamed(t, dx, name)); n != 0 {
				t.Errorf("%d flows named %s exist", n, name)
			}
		})
	}
}

func TestFlowRemove(t *testing.T) {
	dx := requireFlowDirectus(t)
	const name = "flow-test-remove"
	opsBefore := countOf(t, dx, "/operations")
	if r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--collections", "articles", "--broker-url", "http://127.0.0.1:9"); r.code != 0 {
		t.Fatalf("install exited %d", r.code)
	}
	flows := flowsNamed(t, dx, name)
	if len(flows) != 1 {
		t.Fatalf("%d flows after install", len(flows))
	}
	r := runCLI(t, adminEnv(dx), "flow", "remove", "--name", name)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("remove exited %d, stderr %q", r.code, r.stderr)
	}
	want := "deleted operation " + flows[0].Operations[0].ID + "\ndeleted flow " + flows[0].ID + ` "` + name + `"` + "\n"
	if r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
	if n := len(flowsNamed(t, dx, name)); n != 0 {
		t.Errorf("%d flows named %s after remove", n, name)
	}
	if n := countOf(t, dx, "/operations"); n != opsBefore {
		t.Errorf("%d operations after remove, %d before install", n, opsBefore)
	}

	r = runCLI(t, adminEnv(dx), "flow", "remove", "--name", name)
	if r.code != 0 || r.stdout != `no flow named "`+name+`"`+"\n" {
		t.Errorf("second remove: exit %d, stdout %q", r.code, r.stdout)
	}
}

// TestFlowDeliversToBroker is the end-to-end proof: a Flow installed by the
// command makes Directus post item events that reach a subscriber of the
// broker — with the default secret header, and with another header that the
// broker is configured to read (webhook_secret_header). flow install
// --secret-header used to configure a header the broker never read: every
// event got 401.
func TestFlowDeliversToBroker(t *testing.T) {
	dx := requireFlowDirectus(t)
	for _, header := range []string{"", "X-Broker-Secret"} {
		t.Run("header "+header, func(t *testing.T) {
			name := "flow-test-e2e" + strings.ToLower(header)
			cfg := config.Default()
			cfg.DirectusURL = dx.URL
			cfg.WebhookSecret = "s3cret"
			env := adminEnv(dx)
			if header != "" {
				cfg.WebhookSecretHeader = header
				env["WEBHOOK_SECRET_HEADER"] = header // flow install reads the broker's setting
			}
			b := brokertest.Start(t, cfg)
			removeAfter(t, dx, name)

			r := runCLI(t, env, "flow", "install", "--name", name, "--collections", "articles",
				"--broker-url", b.URL+"/webhook", "--secret", "s3cret", "--check-collection", "articles")
			if r.code != 0 {
				t.Fatalf("install --check-collection exited %d\n%s", r.code, dx.Log())
			}
			if !strings.Contains(r.stdout, "reached the broker") {
				t.Errorf("stdout does not report the check:\n%s", r.stdout)
			}
			if header != "" && !strings.Contains(r.stdout, "with the secret in "+header) {
				t.Errorf("stdout does not name the header:\n%s", r.stdout)
			}

			c := brokertest.Dial(t, b.WSURL, dx.AdminToken)
			c.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
			if f := c.NextOfType(t, "SUBSCRIBED"); f["collection"] != "articles" {
				t.Fatalf("SUBSCRIBED frame %v", f)
			}
			var created struct {
				Data struct {
					ID float64 `json:"id"`
				} `json:"data"`
			}
			if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodPost, "/items/articles", map[string]any{"title": "via the flow"}, &created); err != nil {
				t.Fatal(err)
			}
			// The check's own delete may still be on its way: skip other events.
			for {
				f := c.NextOfType(t, "SUBSCRIPTION")
				if f["action"] == "create" && fmt.Sprint(f["keys"]) == fmt.Sprint([]any{created.Data.ID}) {
					if f["collection"] != "articles" {
						t.Errorf("frame %v: wrong collection", f)
					}
					return
				}
				t.Logf("skipping %v", f)
			}
		})
	}
}

func TestFlowCheckWarnsWhenNothingArrives(t *testing.T) {
	dx := requireFlowDirectus(t)

	t.Run("broker down", func(t *testing.T) {
		const name = "flow-test-check-down"
		removeAfter(t, dx, name)
		dead := "http://" + closedPort(t)
		r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--collections", "articles",
			"--broker-url", dead+"/webhook", "--check-collection", "articles", "--check-timeout", "2s")
		if r.code != exitCheckFailed {
			t.Errorf("exit %d, want %d", r.code, exitCheckFailed)
		}
		if got := lines(r.stderr); len(got) != 1 || !strings.Contains(got[0], "cannot read the broker's metrics at "+dead+"/metrics") {
			t.Errorf("stderr = %q, want one line naming the broker's metrics", got)
		}
		if !strings.Contains(r.stdout, "created flow") {
			t.Errorf("the flow should still be installed:\n%s", r.stdout)
		}
	})

	t.Run("broker refuses the secret", func(t *testing.T) {
		const name = "flow-test-check-secret"
		cfg := config.Default()
		cfg.DirectusURL = dx.URL
		cfg.WebhookSecret = "s3cret"
		b := brokertest.Start(t, cfg)
		removeAfter(t, dx, name)
		items := countOf(t, dx, "/items/articles")
		r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--collections", "articles",
			"--broker-url", b.URL+"/webhook", "--secret", "wrong-secret", "--check-collection", "articles", "--check-timeout", "3s")
		if r.code != exitCheckFailed {
			t.Errorf("exit %d, want %d", r.code, exitCheckFailed)
		}
		got := lines(r.stderr)
		if len(got) != 1 || !strings.Contains(got[0], "set IMPORT_IP_DENY_LIST=169.254.169.254 in Directus's environment") || !strings.Contains(got[0], "check the secret") {
			t.Errorf("stderr = %q, want the one IMPORT_IP_DENY_LIST warning line", got)
		}
		if strings.Contains(r.stdout+r.stderr, "wrong-secret") {
			t.Error("output shows the secret")
		}
		if n := countOf(t, dx, "/items/articles"); n != items {
			t.Errorf("%d articles before, %d after: the test item was not deleted", items, n)
		}
	})
}

// TestFlowCheckWarnsOnDefaultDenyList is the real trap: a Directus with its
// default IMPORT_IP_DENY_LIST (0.0.0.0 denies every local address) cannot
// post to a broker on 127.0.0.1, and --check-collection says so.
func TestFlowCheckWarnsOnDefaultDenyList(t *testing.T) {
	requireFlowDirectus(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	dx, err := directustest.Start(ctx, directustest.Options{Version: "11.17.4",
		Env: map[string]string{"IMPORT_IP_DENY_LIST": "0.0.0.0,169.254.169.254"}})
	if err != nil {
		t.Fatal(err)
	}
	defer dx.Stop()
	if err := dx.CreateCollection(ctx, "articles", directustest.Field{Name: "title"}); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DirectusURL = dx.URL
	cfg.WebhookSecret = "s3cret"
	b := brokertest.Start(t, cfg)
	r := runCLI(t, adminEnv(dx), "flow", "install", "--collections", "articles",
		"--broker-url", b.URL+"/webhook", "--secret", "s3cret", "--check-collection", "articles", "--check-timeout", "5s")
	if r.code != exitCheckFailed {
		t.Fatalf("exit %d, want %d", r.code, exitCheckFailed)
	}
	if got := lines(r.stderr); len(got) != 1 || !strings.Contains(got[0], "IMPORT_IP_DENY_LIST=169.254.169.254") {
		t.Fatalf("stderr = %q, want the IMPORT_IP_DENY_LIST warning", got)
	}
	if m := b.Broker.Metrics(); m.EventsPublished != 0 {
		t.Fatalf("an event arrived although Directus denies local addresses: %+v", m)
	}
}

// waitFor polls cond until it holds (the Flow runs in Directus, on its own
// time: there is nothing to wait on but the effect).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(brokertest.DefaultWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// flowActivity counts the activity rows Directus wrote about runs of the
// Flow.
func flowActivity(t *testing.T, dx *directustest.Instance, flowID string) int {
	t.Helper()
	q := url.Values{"filter[item][_eq]": {flowID}, "filter[collection][_eq]": {"directus_flows"}, "filter[action][_eq]": {"run"}, "fields": {"id"}, "limit": {"-1"}}
	var out struct {
		Data []map[string]any `json:"data"`
	}
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodGet, "/activity?"+q.Encode(), nil, &out); err != nil {
		t.Fatal(err)
	}
	return len(out.Data)
}

// TestFlowLogsNoActivity: the Flow flow install makes writes no activity
// and no revision per event (at 100 writes a second, "all" adds 8.6
// million activity rows a day); --accountability all brings the logging
// back for debugging, and running install again updates an existing Flow.
func TestFlowLogsNoActivity(t *testing.T) {
	dx := requireFlowDirectus(t)
	const name = "flow-test-activity"
	cfg := config.Default()
	cfg.DirectusURL = dx.URL
	cfg.WebhookSecret = "s3cret"
	b := brokertest.Start(t, cfg)
	removeAfter(t, dx, name)
	install := func(extra ...string) string {
		args := append([]string{"flow", "install", "--name", name, "--collections", "articles",
			"--broker-url", b.URL + "/webhook", "--secret", "s3cret", "--check-collection", "articles"}, extra...)
		if r := runCLI(t, adminEnv(dx), args...); r.code != 0 {
			t.Fatalf("install %v exited %d", extra, r.code)
		}
		flows := flowsNamed(t, dx, name)
		if len(flows) != 1 {
			t.Fatalf("%d flows", len(flows))
		}
		return flows[0].ID
	}
	id := install("--accountability", "all")
	waitFor(t, "the debugging Flow's activity", func() bool { return flowActivity(t, dx, id) > 0 })
	before := flowActivity(t, dx, id)
	if again := install(); again != id {
		t.Fatalf("install again made flow %s instead of updating %s", again, id)
	}
	if f := flowsNamed(t, dx, name)[0]; f.Accountability != "" {
		t.Fatalf("accountability %q after install without --accountability, want null", f.Accountability)
	}
	// The check of the second install created and deleted an item: events
	// that reached the broker, and no activity about the Flow.
	published := b.Broker.Metrics().EventsPublished
	var created struct {
		Data struct {
			ID float64 `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodPost, "/items/articles", map[string]any{"title": "quiet"}, &created); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the event", func() bool { return b.Broker.Metrics().EventsPublished > published })
	if after := flowActivity(t, dx, id); after != before {
		t.Fatalf("the Flow logged %d activity rows without accountability", after-before)
	}
}

// TestFlowDeliversAccessEvents: the installed Flow posts changes of users
// (and roles, policies, permissions) to the broker, which regroups its
// subscribers.
func TestFlowDeliversAccessEvents(t *testing.T) {
	dx := requireFlowDirectus(t)
	const name = "flow-test-access"
	cfg := config.Default()
	cfg.DirectusURL = dx.URL
	cfg.WebhookSecret = "s3cret"
	b := brokertest.Start(t, cfg)
	removeAfter(t, dx, name)
	if r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--broker-url", b.URL+"/webhook", "--secret", "s3cret"); r.code != 0 {
		t.Fatalf("install exited %d", r.code)
	}
	var users struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodGet, "/users?filter[email][_eq]=editor@example.com&fields=id", nil, &users); err != nil || len(users.Data) != 1 {
		t.Fatalf("editor: %v %v", users, err)
	}
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodPatch, "/users/"+users.Data[0].ID, map[string]any{"first_name": "renamed"}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the users.update event to reach the broker", func() bool { return b.Broker.Metrics().AccessChanges > 0 })
}

// TestFlowFollowsNewCollections: without --collections the Flow fires for
// collections created after it was installed (Directus 11 and 12): their
// subscribers get events without running install again.
func TestFlowFollowsNewCollections(t *testing.T) {
	for _, version := range []string{"11.17.4", "12.3.1"} {
		t.Run(version, func(t *testing.T) {
			dx := requireFlowDirectus(t)
			if version != directustest.DefaultVersion {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel()
				var err error
				if dx, err = directustest.Start(ctx, directustest.Options{Version: version}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = dx.Stop() }) // after the Flow's removal
			}
			name := "flow-test-new-" + version
			cfg := config.Default()
			cfg.DirectusURL = dx.URL
			cfg.WebhookSecret = "s3cret"
			b := brokertest.Start(t, cfg)
			removeAfter(t, dx, name)
			if r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--broker-url", b.URL+"/webhook", "--secret", "s3cret"); r.code != 0 {
				t.Fatalf("install exited %d", r.code)
			}
			coll := "later_" + strings.ReplaceAll(version, ".", "_")
			if err := dx.CreateCollection(context.Background(), coll, directustest.Field{Name: "title"}); err != nil {
				t.Fatal(err)
			}
			c := brokertest.Dial(t, b.WSURL, dx.AdminToken)
			c.Send(t, map[string]any{"type": "subscribe", "collection": coll})
			c.NextOfType(t, "SUBSCRIBED")
			if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodPost, "/items/"+coll, map[string]any{"title": "new"}, nil); err != nil {
				t.Fatal(err)
			}
			if f := c.NextOfType(t, "SUBSCRIPTION"); f["action"] != "create" || f["collection"] != coll {
				t.Fatalf("got %v", f)
			}
		})
	}
}

// heldWebhook is a proxy in front of the broker's webhook that can hold the
// Flow's POSTs back: the event of a write is then still on its way while a
// client subscribes — the race seen under load, made to happen on demand.
type heldWebhook struct {
	*httptest.Server
	mu      sync.Mutex
	holding bool
	held    chan struct{} // receives when a POST is held
	release chan struct{}
}

func newHeldWebhook(t *testing.T, target string) *heldWebhook {
	u, _ := url.Parse(target)
	proxy := httputil.NewSingleHostReverseProxy(u)
	h := &heldWebhook{held: make(chan struct{}, 16), release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		hold := h.holding
		h.mu.Unlock()
		if hold {
			h.held <- struct{}{}
			<-h.release
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(h.Close)
	return h
}

// TestNoDuplicateCreateAfterInit: a subscription opened while a create's
// event is still on its way gets an init that holds the item already; the
// create that follows is dropped (Directus never sends both), on both
// protocols; the next update comes through.
func TestNoDuplicateCreateAfterInit(t *testing.T) {
	dx := requireFlowDirectus(t)
	const name = "flow-test-dup"
	cfg := config.Default()
	cfg.DirectusURL = dx.URL
	cfg.WebhookSecret = "s3cret"
	b := brokertest.Start(t, cfg)
	hook := newHeldWebhook(t, b.URL)
	removeAfter(t, dx, name)
	if r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--collections", "tags", "--broker-url", hook.URL+"/webhook", "--secret", "s3cret"); r.code != 0 {
		t.Fatalf("install exited %d", r.code)
	}
	hook.mu.Lock()
	hook.holding = true
	hook.mu.Unlock()
	var created struct {
		Data struct {
			ID float64 `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodPost, "/items/tags", map[string]any{"title": "raced"}, &created); err != nil {
		t.Fatal(err)
	}
	<-hook.held // the create's event is on its way, held back
	hook.mu.Lock()
	hook.holding = false
	hook.mu.Unlock()
	id := fmt.Sprint(created.Data.ID)

	ext := brokertest.Dial(t, b.WSURL, dx.AdminToken)
	ext.Send(t, map[string]any{"type": "subscribe", "collection": "tags", "uid": "s", "init": true})
	ext.NextOfType(t, "SUBSCRIBED")
	if f := ext.Next(t); f["action"] != "init" || !strings.Contains(fmt.Sprint(f["data"]), "raced") {
		t.Fatalf("extension init: %v", f)
	}
	rt := brokertest.Dial(t, strings.Replace(b.URL, "http", "ws", 1)+"/realtime", "")
	rt.Send(t, map[string]any{"type": "auth", "access_token": dx.AdminToken})
	rt.Next(t)
	rt.Send(t, map[string]any{"type": "subscribe", "collection": "tags", "uid": "r"})
	if f := rt.Next(t); f["event"] != "init" || !strings.Contains(fmt.Sprint(f["data"]), "raced") {
		t.Fatalf("realtime init: %v", f)
	}
	close(hook.release) // the create arrives after both inits
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodPatch, "/items/tags/"+id, map[string]any{"title": "raced 2"}, nil); err != nil {
		t.Fatal(err)
	}
	if f := ext.Next(t); f["action"] != "update" || fmt.Sprint(f["keys"]) != "["+id+"]" {
		t.Fatalf("extension: the first event after init must be the update, got %v", f)
	}
	if f := rt.Next(t); f["event"] != "update" {
		t.Fatalf("realtime: the first event after init must be the update, got %v", f)
	}
}

// TestUncoveredCollectionNotice: a subscriber of a collection no active
// Flow covers is told so once (it would otherwise wait forever); one of a
// covered collection is not. It needs the service token (to read the
// Flows).
func TestUncoveredCollectionNotice(t *testing.T) {
	dx := requireFlowDirectus(t)
	const name = "flow-test-cover"
	client, _ := directus.NewClient(dx.URL, 10*time.Second)
	service, err := flow.EnsureServiceUser(context.Background(), client, dx.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	removeAfter(t, dx, name)
	// Other tests' Flows may follow every collection: this test's Flow
	// must be the only active one.
	var flows struct {
		Data []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"data"`
	}
	if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodGet, "/flows?fields=id,name&filter[status][_eq]=active", nil, &flows); err != nil {
		t.Fatal(err)
	}
	for _, f := range flows.Data {
		t.Logf("deactivating flow %s (%s) for this test", f.ID, f.Name)
		if _, err := dx.Do(context.Background(), dx.AdminToken, http.MethodPatch, "/flows/"+f.ID, map[string]any{"status": "inactive"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name, "--collections", "tags", "--broker-url", "http://127.0.0.1:9/webhook"); r.code != 0 {
		t.Fatalf("install exited %d", r.code)
	}
	cfg := config.Default()
	cfg.DirectusURL = dx.URL
	cfg.DirectusServiceToken = service
	b := brokertest.Start(t, cfg)
	c := brokertest.Dial(t, b.WSURL, dx.AdminToken)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "a"})
	c.NextOfType(t, "SUBSCRIBED")
	if f := c.Next(t); f["type"] != "ERROR" || f["data"].(map[string]any)["code"] != "NOT_COVERED" || f["uid"] != "a" {
		t.Fatalf("want a NOT_COVERED notice, got %v", f)
	}
	c.Send(t, map[string]any{"type": "subscribe", "collection": "tags", "uid": "t"})
	c.NextOfType(t, "SUBSCRIBED")
	c.Quiet(t, "covered")

	// A Flow installed while the broker runs fires no event the broker
	// sees: a subscriber of the collection it now covers is not told
	// NOT_COVERED once the Flows read is a few seconds old (without the
	// recheck: until access_refresh, a minute).
	removeAfter(t, dx, name+"-articles")
	if r := runCLI(t, adminEnv(dx), "flow", "install", "--name", name+"-articles", "--collections", "articles", "--broker-url", "http://127.0.0.1:9/webhook"); r.code != 0 {
		t.Fatalf("install exited %d", r.code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		uid := fmt.Sprint("a", i)
		c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": uid})
		c.NextOfType(t, "SUBSCRIBED")
		c.Send(t, map[string]any{"type": "ping", "uid": uid})
		f := c.Next(t)
		if f["type"] == "PONG" {
			break // no notice before the pong
		}
		if f["type"] != "ERROR" || f["data"].(map[string]any)["code"] != "NOT_COVERED" {
			t.Fatalf("unexpected frame %v", f)
		}
		c.NextOfType(t, "PONG")
		if time.Now().After(deadline) {
			t.Fatal("still NOT_COVERED 10 s after a Flow covering the collection was installed")
		}
		time.Sleep(500 * time.Millisecond) // pacing the retries; the loop ends on the broker's answer
	}
}
