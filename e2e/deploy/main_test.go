//go:build linux

// Package deploy checks the deployment files against the real programs that
// run them, as far as this machine allows:
//
//   - the Dockerfile's final stage, built and run with podman (the image's
//     HEALTHCHECK, its defaults, a WebSocket subscriber receiving an event);
//   - the nginx recipe and the Caddyfile, run by Debian's nginx and Caddy in
//     front of the broker binary (WebSockets through them, the webhook with
//     and without the secret);
//   - the systemd unit, with systemd-analyze verify and security;
//   - compose.yaml, statically (no base image can be pulled here).
//
// TestMain builds the broker once, statically (CGO_ENABLED=0, as the
// Dockerfile does), for both the processes and the image. Directus (real,
// from internal/directustest) is started once, on first use. Each tool is
// installed when missing by its scripts/ensure-*.sh (root and apt-get); when
// that fails, its test fails. PODMAN_TESTS=0, NGINX_TESTS=0, CADDY_TESTS=0,
// SYSTEMD_TESTS=0, COMPOSE_TESTS=0 and DIRECTUS_TESTS=0 skip on purpose
// (make unit sets them all: it installs nothing).
package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// testVersion is linked into the binary; the tests find it in `version`
// and in the start-up log line.
const testVersion = "e2e-deploy-test"

const (
	adminToken = directustest.DefaultAdminToken
	secret     = "deploy-test-webhook-secret"
	// collection is readable by the public role for items whose status is
	// "published" (WEBSOCKET_PUBLIC subscribers), and by the admin.
	collection = "articles"
)

var (
	// root is the repository root; binary the broker TestMain built.
	root, binary string

	dx     *directustest.Instance
	dxOnce sync.Once
	dxErr  error
)

func TestMain(m *testing.M) {
	var err error
	if root, err = moduleRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "deploy-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "directus-ws-broker")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion, "-o", binary, ".")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the broker:", err)
		os.Exit(1)
	}
	code := m.Run()
	if dx != nil {
		_ = dx.Stop()
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// requireDirectus starts the shared Directus on first use, with the
// collection readable by the public role when published, and skips when
// DIRECTUS_TESTS=0.
func requireDirectus(t testing.TB) {
	t.Helper()
	dxOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		dx, dxErr = directustest.Start(ctx, directustest.Options{Version: "11.17.4"})
		if dxErr != nil {
			return
		}
		if dxErr = dx.CreateCollection(ctx, collection, directustest.Field{Name: "title"}, directustest.Field{Name: "status"}); dxErr != nil {
			return
		}
		dxErr = dx.SetPublicRead(ctx, collection, []string{"id", "title", "status"}, map[string]any{"status": map[string]any{"_eq": "published"}})
	})
	if errors.Is(dxErr, directustest.ErrDisabled) {
		t.Skip("DIRECTUS_TESTS=0: test skipped")
	}
	if dxErr != nil {
		t.Fatalf("starting Directus: %v", dxErr)
	}
}

// createItem creates a published item as admin and returns its id.
func createItem(t testing.TB, title string) string {
	t.Helper()
	var out struct {
		Data map[string]any `json:"data"`
	}
	if _, err := dx.Do(t.Context(), adminToken, http.MethodPost, "/items/"+collection, map[string]any{"title": title, "status": "published"}, &out); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(out.Data["id"])
}

// requireTool makes sure command is installed, running
// scripts/ensure-<name>.sh when it is not, and returns its path. The test
// is skipped when skipVar=0 (make unit sets them all) and fails when the
// tool cannot be installed: a suite that skipped it would pass untested.
func requireTool(t testing.TB, command, script, skipVar string) string {
	t.Helper()
	if os.Getenv(skipVar) == "0" {
		t.Skipf("%s=0: test skipped", skipVar)
	}
	if p, err := lookPath(command); err == nil {
		return p
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(root, "scripts", script)).CombinedOutput()
	if err != nil {
		t.Fatalf("%s is not available and %s could not install it (%v): %s (%s=0 skips this test)", command, script, err, strings.TrimSpace(string(out)), skipVar)
	}
	p, err := lookPath(command)
	if err != nil {
		t.Fatalf("%s installed by %s but not found: %v", command, script, err)
	}
	return p
}

// lookPath is exec.LookPath that also looks in the sbin directories, where
// Debian puts nginx and runc and which a non-login shell may lack.
func lookPath(command string) (string, error) {
	if p, err := exec.LookPath(command); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, command)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found on PATH or in the sbin directories", command)
}

// waitFor polls cond every 20 ms until it holds, failing the test after
// timeout with what was awaited.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// repoFile reads a file of the repository.
func repoFile(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
