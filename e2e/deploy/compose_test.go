//go:build linux

package deploy

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// composeService is the part of a compose.yaml service the tests read.
type composeService struct {
	Image       string            `yaml:"image"`
	Build       string            `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Volumes     []string `yaml:"volumes"`
	Ports       []string `yaml:"ports"`
	Healthcheck struct {
		Test    []string `yaml:"test"`
		Disable bool     `yaml:"disable"`
	} `yaml:"healthcheck"`
	Restart         string `yaml:"restart"`
	StopGracePeriod string `yaml:"stop_grace_period"`
}

// TestComposeFile checks compose.yaml statically (no base image can be
// pulled here, so it cannot run): the services and how they are wired,
// against the files, defaults and versions the other tests run for real.
func TestComposeFile(t *testing.T) {
	var f struct {
		Services map[string]composeService `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	if err := yaml.Unmarshal([]byte(repoFile(t, "compose.yaml")), &f); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var names []string
	for name := range f.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	if want := []string{"broker-1", "broker-2", "directus", "flow-install", "nginx", "redis"}; !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}
	healthy := func(name string, s composeService, deps ...string) {
		t.Helper()
		for _, d := range deps {
			if s.DependsOn[d].Condition != "service_healthy" {
				t.Errorf("%s: depends_on %s: condition %q, want service_healthy", name, d, s.DependsOn[d].Condition)
			}
			if len(f.Services[d].Healthcheck.Test) == 0 && d != "broker-1" && d != "broker-2" {
				t.Errorf("%s depends on %s being healthy, which has no healthcheck", name, d)
			}
		}
	}

	dxs := f.Services["directus"]
	// The version the integration tests run.
	if want := "directus/directus:" + directustest.DefaultVersion; dxs.Image != want {
		t.Errorf("directus: image %q, want %q", dxs.Image, want)
	}
	for k, want := range map[string]string{"IMPORT_IP_DENY_LIST": "169.254.169.254", "WEBSOCKETS_ENABLED": "false", "DB_CLIENT": "sqlite3"} {
		if dxs.Environment[k] != want {
			t.Errorf("directus: %s=%q, want %q", k, dxs.Environment[k], want)
		}
	}
	dbDir := filepath.Dir(dxs.Environment["DB_FILENAME"])
	if !slices.ContainsFunc(dxs.Volumes, func(v string) bool {
		name, target, _ := strings.Cut(v, ":")
		return target == dbDir && hasKey(f.Volumes, name)
	}) {
		t.Errorf("directus: the SQLite database's directory %s is not on a named volume: %v", dbDir, dxs.Volumes)
	}

	// The upstreams nginx is given: the replicas, on the image's port.
	upstreams := regexp.MustCompile(`(?m)^server (\S+);`).FindAllStringSubmatch(repoFile(t, "deploy/compose/nginx.upstreams"), -1)
	imagePort := dockerfileListenPort(t)
	var upstreamHosts []string
	for _, m := range upstreams {
		host, port, err := net.SplitHostPort(m[1])
		if err != nil || port != imagePort {
			t.Errorf("nginx.upstreams: %s: want host:%s (the image's LISTEN_ADDR)", m[1], imagePort)
		}
		upstreamHosts = append(upstreamHosts, host)
	}
	if !slices.Equal(upstreamHosts, []string{"broker-1", "broker-2"}) {
		t.Errorf("nginx.upstreams lists %v, want broker-1 and broker-2", upstreamHosts)
	}

	for _, name := range []string{"broker-1", "broker-2"} {
		b := f.Services[name]
		if b.Build != "." || b.Image == "" {
			t.Errorf("%s: build %q image %q: want the Dockerfile of the repository", name, b.Build, b.Image)
		}
		if b.Environment["BUS"] != "redis" || urlHost(b.Environment["REDIS_URL"]) != "redis" {
			t.Errorf("%s: BUS=%q REDIS_URL=%q: want the redis service's bus", name, b.Environment["BUS"], b.Environment["REDIS_URL"])
		}
		if urlHost(b.Environment["DIRECTUS_URL"]) != "directus" {
			t.Errorf("%s: DIRECTUS_URL=%q: want the directus service", name, b.Environment["DIRECTUS_URL"])
		}
		if _, set := b.Environment["LISTEN_ADDR"]; set {
			t.Errorf("%s sets LISTEN_ADDR: nginx.upstreams assumes the image's default", name)
		}
		if !strings.HasPrefix(b.Environment["WEBHOOK_SECRET"], "${WEBHOOK_SECRET") {
			t.Errorf("%s: WEBHOOK_SECRET must come from .env", name)
		}
		if d, err := time.ParseDuration(b.StopGracePeriod); err != nil || d <= config.Default().ShutdownTimeout {
			t.Errorf("%s: stop_grace_period %q: want more than SHUTDOWN_TIMEOUT (%s)", name, b.StopGracePeriod, config.Default().ShutdownTimeout)
		}
		healthy(name, b, "directus", "redis")
	}

	ngx := f.Services["nginx"]
	for _, want := range []string{
		"./deploy/nginx/directus-ws-broker.conf:/etc/nginx/conf.d/default.conf:ro",
		"./deploy/compose/nginx.upstreams:/etc/nginx/directus-ws-broker.upstreams:ro",
	} {
		if !slices.Contains(ngx.Volumes, want) {
			t.Errorf("nginx: volumes %v lack %s", ngx.Volumes, want)
		}
	}
	healthy("nginx", ngx, "broker-1", "broker-2")

	flow := f.Services["flow-install"]
	if len(flow.Command) < 2 || flow.Command[0] != "flow" || flow.Command[1] != "install" {
		t.Errorf("flow-install: command %v, want flow install …", flow.Command)
	}
	if i := slices.Index(flow.Command, "--broker-url"); i < 0 || i+1 >= len(flow.Command) || urlHost(flow.Command[i+1]) != "nginx" {
		t.Errorf("flow-install: command %v: want --broker-url on the nginx service", flow.Command)
	}
	for _, k := range []string{"DIRECTUS_ADMIN_TOKEN", "WEBHOOK_SECRET"} {
		if !strings.HasPrefix(flow.Environment[k], "${"+k) {
			t.Errorf("flow-install: %s must come from .env, not be written in compose.yaml", k)
		}
	}
	if flow.Restart != "no" || !flow.Healthcheck.Disable {
		t.Errorf("flow-install: restart %q, healthcheck disabled %v: want a one-shot", flow.Restart, flow.Healthcheck.Disable)
	}
	healthy("flow-install", flow, "directus")

	for name, s := range f.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond loopback", name, p)
			}
		}
		for _, v := range s.Volumes {
			if src, _, _ := strings.Cut(v, ":"); strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("%s mounts %s: %v", name, src, err)
				}
			}
		}
	}

	// Every required variable is in the example .env.
	example := repoFile(t, "deploy/compose/env.example")
	for _, m := range regexp.MustCompile(`\$\{(\w+):\?`).FindAllStringSubmatch(repoFile(t, "compose.yaml"), -1) {
		if !regexp.MustCompile(`(?m)^` + m[1] + `=`).MatchString(example) {
			t.Errorf("compose.yaml requires %s, which deploy/compose/env.example does not list", m[1])
		}
	}
}

// TestComposeConfig validates compose.yaml with docker-compose's own
// schema and interpolation (`docker-compose config`; no engine needed),
// with the example .env filled in.
func TestComposeConfig(t *testing.T) {
	compose := requireTool(t, "docker-compose", "ensure-docker-compose.sh", "COMPOSE_TESTS")
	var env []string
	for _, line := range strings.Split(repoFile(t, "deploy/compose/env.example"), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			if v == "" {
				v = "value-of-" + k
			}
			env = append(env, k+"="+v)
		}
	}
	envFile := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(envFile, []byte(strings.Join(env, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	if out, err := execIn(t, root, base, compose, "--env-file", envFile, "-f", "compose.yaml", "config", "-q"); err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	// Without the .env, the required secrets are refused, not left empty.
	empty := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := execIn(t, root, base, compose, "--env-file", empty, "-f", "compose.yaml", "config", "-q"); err == nil || !strings.Contains(out, "in .env") {
		t.Fatalf("docker-compose config without .env: %v, want a missing-variable error\n%s", err, out)
	}
}

// dockerfileListenPort is the port of the Dockerfile's ENV LISTEN_ADDR.
func dockerfileListenPort(t testing.TB) string {
	t.Helper()
	for _, in := range dockerfile(t) {
		if v, ok := strings.CutPrefix(in.arg, "LISTEN_ADDR="); in.op == "ENV" && ok {
			_, port, err := net.SplitHostPort(v)
			if err != nil {
				t.Fatalf("Dockerfile: ENV LISTEN_ADDR=%s: %v", v, err)
			}
			return port
		}
	}
	t.Fatal("Dockerfile: no ENV LISTEN_ADDR")
	return ""
}

func urlHost(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

func hasKey(m map[string]any, k string) bool {
	_, ok := m[k]
	return ok
}
