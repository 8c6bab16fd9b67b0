//go:build linux

package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/child"
)

// e2eLabel marks the containers and images the test creates, with the pid
// of the test binary that created them: a later run removes those whose
// creator died without running its cleanups (a test timeout, a kill).
const e2eLabel = "io.github.directus-ws-broker.e2e-pid"

// TestContainerImage builds the Dockerfile's final stage with podman and
// runs it.
//
// What differs from `docker build .`: no base image can be pulled here. The
// "build" stage's commands run on this machine instead of in golang:…
// (runBuildStage), and its output directory is handed to podman in place
// of the stage (`--build-context build=DIR`). Every line of the final stage
// runs as written. --format docker keeps the HEALTHCHECK (the OCI format
// has no field for it).
//
// Then, once with the image's defaults in a network namespace of its own
// (no network but loopback): the HEALTHCHECK passes on 0.0.0.0:8080, the
// process runs as 65532, the healthcheck command can fail, SIGTERM stops it
// cleanly. And once on the host's network, on a loopback port, against a
// real Directus: /healthz, /readyz, the HEALTHCHECK, a public WebSocket
// subscriber receiving an event posted to the webhook.
func TestContainerImage(t *testing.T) {
	podman := requireTool(t, "podman", "ensure-podman.sh", "PODMAN_TESTS")
	pm := &podmanCmd{t: t, bin: podman}
	pm.reap()
	pm.runFlags = runFlags(t)

	image := pm.build()
	var inspected []struct {
		Size   int64
		Config struct {
			User       string
			Env        []string
			Entrypoint []string
			Cmd        []string
		}
		HealthCheck struct {
			Test []string
		}
	}
	if err := json.Unmarshal([]byte(pm.mustRun("image", "inspect", image)), &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect: %v (%d images)", err, len(inspected))
	}
	cfg := inspected[0]
	t.Logf("image size: %.1f MB (%d bytes)", float64(cfg.Size)/1e6, cfg.Size)
	if cfg.Size > 25e6 {
		t.Errorf("image is %d bytes: a static binary on scratch should stay under 25 MB", cfg.Size)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("USER %q, want 65532:65532", cfg.Config.User)
	}
	if !slices.Contains(cfg.Config.Env, "LISTEN_ADDR=0.0.0.0:8080") {
		t.Errorf("ENV %v lacks LISTEN_ADDR=0.0.0.0:8080", cfg.Config.Env)
	}
	if want := []string{"CMD", "/directus-ws-broker", "healthcheck"}; !slices.Equal(cfg.HealthCheck.Test, want) {
		t.Errorf("HEALTHCHECK %v, want %v", cfg.HealthCheck.Test, want)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/directus-ws-broker"}) || !slices.Equal(cfg.Config.Cmd, []string{"serve"}) {
		t.Errorf("ENTRYPOINT %v CMD %v", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}

	t.Run("defaults", func(t *testing.T) {
		pm := pm.with(t)
		c := pm.start("defaults", []string{"--network", "none"}, nil)
		if addr, _ := c.waitListening(); addr != "[::]:8080" {
			t.Errorf("listening on %q, want all addresses, port 8080 ([::]:8080)", addr)
		}
		c.waitHealthy()
		out := pm.mustRun("inspect", "--format", "{{json .State.Health.Log}}", c.name)
		if !strings.Contains(out, "GET http://127.0.0.1:8080/healthz: HTTP 200") {
			t.Errorf("HEALTHCHECK log %s: want a 200 from port 8080", out)
		}
		pid := strings.TrimSpace(pm.mustRun("inspect", "--format", "{{.State.Pid}}", c.name))
		status := readFile("/proc/" + pid + "/status")
		if !regexp.MustCompile(`(?m)^Uid:\s+65532\s+65532\s+65532\s+65532$`).MatchString(status) {
			t.Errorf("the broker (pid %s) does not run as 65532:\n%s", pid, status)
		}
		if out, err := pm.run("exec", c.name, "/directus-ws-broker", "healthcheck", "--url", "http://127.0.0.1:1/healthz"); err == nil {
			t.Errorf("healthcheck of a closed port succeeded: %s", out)
		}
		if out := pm.mustRun("exec", c.name, "/directus-ws-broker", "version"); !strings.Contains(out, testVersion) {
			t.Errorf("version in the image: %q, want %s", out, testVersion)
		}
		if code := c.stop(); code != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0 (graceful shutdown)", code)
		}
	})

	t.Run("serving", func(t *testing.T) {
		requireDirectus(t)
		pm := pm.with(t)
		// The host's network, so that the container reaches the test's
		// Directus on loopback and nothing leaves 127.0.0.1. The port is
		// told to the broker (LISTEN_ADDR): the HEALTHCHECK reads it too.
		var c *container
		var base string
		for attempt := 1; ; attempt++ {
			port := freePort(t)
			c = pm.start(fmt.Sprintf("serving-%d", attempt), []string{"--network", "host"}, map[string]string{
				"LISTEN_ADDR":      fmt.Sprintf("127.0.0.1:%d", port),
				"DIRECTUS_URL":     dx.URL,
				"WEBHOOK_SECRET":   secret,
				"WEBSOCKET_PUBLIC": "true",
			})
			if _, ok := c.waitListening(); ok {
				base = fmt.Sprintf("http://127.0.0.1:%d", port)
				break
			}
			if attempt == 3 {
				t.Fatalf("the container could not bind a free port three times")
			}
		}
		waitFor(t, "/readyz of the container", 30*time.Second, func() bool { return httpStatus(base+"/readyz") == http.StatusOK })
		if s := httpStatus(base + "/healthz"); s != http.StatusOK {
			t.Fatalf("/healthz: HTTP %d", s)
		}
		c.waitHealthy()

		// No token: the public role, which reads published items.
		sub := subscribe(t, "ws"+strings.TrimPrefix(base, "http")+"/websocket", "")
		key := createItem(t, "from the container")
		if status, body := postWebhook(t, base, secret, key); status != http.StatusAccepted {
			t.Fatalf("webhook: HTTP %d %s", status, body)
		}
		expectUpdate(t, sub, key, "from the container")
		if status, _ := postWebhook(t, base, "", key); status != http.StatusUnauthorized {
			t.Fatalf("webhook without the secret: HTTP %d, want 401", status)
		}
		if !strings.Contains(c.proc.logText(), `"version":"`+testVersion+`"`) {
			t.Errorf("the start-up log line lacks the version:\n%s", c.proc.logText())
		}
		if code := c.stop(); code != 0 {
			t.Errorf("exit status %d after SIGTERM, want 0 (graceful shutdown)", code)
		}
	})
}

// podmanCmd runs podman for one test.
type podmanCmd struct {
	t        *testing.T
	bin      string
	runFlags []string
	image    string
}

func (p *podmanCmd) with(t *testing.T) *podmanCmd {
	c := *p
	c.t = t
	return &c
}

func (p *podmanCmd) run(args ...string) (string, error) {
	p.t.Helper()
	return execOutput(p.t, append([]string{p.bin}, args...)...)
}

func (p *podmanCmd) mustRun(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runFlags are the `podman run` flags this machine needs. Its cgroups are
// "hybrid" (v1 controllers plus a v2 mount), which crun, Debian's default
// runtime, refuses: runc runs there. podman's default limits (1048576 open
// files, all processes) exceed what a container may set here: the test's
// own open-file limit and 4096 processes are asked instead.
// PODMAN_RUNTIME overrides the runtime.
func runFlags(t *testing.T) []string {
	var flags []string
	runtime := os.Getenv("PODMAN_RUNTIME")
	if _, err := os.Stat("/sys/fs/cgroup/unified"); runtime == "" && err == nil {
		runtime = requireTool(t, "runc", "ensure-podman.sh", "PODMAN_TESTS")
	}
	if runtime != "" {
		flags = append(flags, "--runtime", runtime)
	}
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	n := min(l.Max, 65536)
	return append(flags, "--ulimit", fmt.Sprintf("nofile=%d:%d", n, n), "--ulimit", "nproc=4096:4096")
}

// build builds the final stage of the Dockerfile (see TestContainerImage)
// and removes the image when the test ends.
func (p *podmanCmd) build() string {
	t := p.t
	start := time.Now()
	ctxDir := runBuildStage(t, map[string]string{"VERSION": testVersion, "COMMIT": "e2e"})
	t.Logf("the Dockerfile's build stage, run here: %.1fs, binary %s", time.Since(start).Seconds(), fileSize(t, filepath.Join(ctxDir, "out/directus-ws-broker")))
	pid := strconv.Itoa(os.Getpid())
	p.image = "localhost/directus-ws-broker-e2e:" + pid
	t.Cleanup(func() {
		if out, err := p.run("rmi", "-f", p.image); err != nil {
			t.Errorf("removing the image: %v\n%s", err, out)
		}
		if _, err := p.run("image", "exists", p.image); err == nil {
			t.Errorf("image %s still exists", p.image)
		}
	})
	start = time.Now()
	p.mustRun("build", "--format", "docker", "--layers=false", "--label", e2eLabel+"="+pid,
		"--build-context", "build="+ctxDir, "-f", filepath.Join(root, "Dockerfile"), "-t", p.image, root)
	t.Logf("podman build of the final stage: %.1fs", time.Since(start).Seconds())
	return p.image
}

// reap removes containers and images of earlier runs whose test binary
// died before its cleanups ran.
func (p *podmanCmd) reap() {
	for _, kind := range [][]string{{"ps", "-a"}, {"images"}} {
		out, err := p.run(append(kind, "--filter", "label="+e2eLabel, "--format", `{{.ID}} {{index .Labels "`+e2eLabel+`"}}`)...)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			id, pidText, ok := strings.Cut(line, " ")
			pid, err := strconv.Atoi(pidText)
			if !ok || err != nil || syscall.Kill(pid, 0) == nil {
				continue
			}
			rm := []string{"rm", "-f", "-t", "0", id}
			if kind[0] == "images" {
				rm = []string{"rmi", "-f", id}
			}
			_, _ = p.run(rm...)
		}
	}
}

// container is one `podman run` of the image, in the foreground as a
// child of the test (its output is the container's), so that a SIGTERM to
// it reaches the broker (podman proxies signals) and its exit status is the
// broker's.
type container struct {
	pm   *podmanCmd
	name string
	proc *proc
}

// start runs the image with flags and env (written to an env file: no
// secret on a command line) and removes the container when the test ends.
func (p *podmanCmd) start(name string, flags []string, env map[string]string) *container {
	t := p.t
	t.Helper()
	dir := t.TempDir()
	envFile := filepath.Join(dir, "env")
	var lines []string
	for k, v := range env {
		lines = append(lines, k+"="+v)
	}
	if err := os.WriteFile(envFile, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &container{pm: p, name: fmt.Sprintf("directus-ws-broker-e2e-%d-%s", os.Getpid(), name)}
	args := []string{p.bin, "run", "--rm", "--name", c.name, "--label", fmt.Sprintf("%s=%d", e2eLabel, os.Getpid()), "--env-file", envFile}
	args = append(append(append(args, p.runFlags...), flags...), p.image)
	c.proc = startServer(t, "podman-run-"+name, dir, os.Environ(), args...)
	// Runs before the proc's own cleanup (last registered, first run).
	t.Cleanup(func() {
		c.stop()
		if _, err := p.run("container", "exists", c.name); err == nil {
			if out, err := p.run("rm", "-f", "-t", "0", c.name); err != nil {
				t.Errorf("removing container %s: %v\n%s", c.name, err, out)
			}
		}
	})
	return c
}

// waitListening waits for the broker's "listening on ADDR" line and
// returns ADDR; false when the container ended first because the port was
// taken (the caller retries).
func (c *container) waitListening() (string, bool) {
	t := c.pm.t
	t.Helper()
	addr, err := c.proc.Addr(t.Context(), 60*time.Second)
	switch {
	case err == nil:
		return addr, true
	case !errors.Is(err, child.ErrExited):
		t.Fatalf("container %s: %v:\n%s", c.name, err, c.proc.logText())
	case strings.Contains(c.proc.logText(), "address already in use"):
		return "", false
	}
	t.Fatalf("container %s ended before listening:\n%s", c.name, c.proc.logText())
	return "", false
}

// waitHealthy runs the image's HEALTHCHECK (podman healthcheck run: there
// is no systemd here to schedule it) until it passes, at most 30 s.
func (c *container) waitHealthy() {
	t := c.pm.t
	t.Helper()
	var last string
	waitFor(t, "HEALTHCHECK of "+c.name, 30*time.Second, func() bool {
		if c.proc.Exited() {
			t.Fatalf("container %s ended:\n%s", c.name, c.proc.logText())
		}
		out, err := c.pm.run("healthcheck", "run", c.name)
		last = out
		return err == nil
	})
	if status := strings.TrimSpace(c.pm.mustRun("inspect", "--format", "{{.State.Health.Status}}", c.name)); status != "healthy" {
		t.Fatalf("health status %q after a passing check (%s)", status, last)
	}
}

// stop sends SIGTERM to `podman run` (which passes it to the broker) and
// returns the exit status; idempotent.
func (c *container) stop() int {
	c.proc.stop(c.pm.t)
	return c.proc.Cmd.ProcessState.ExitCode()
}

func fileSize(t testing.TB, path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%.1f MB", float64(fi.Size())/1e6)
}
