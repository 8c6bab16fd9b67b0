//go:build linux

package deploy

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/config"
)

// A reverse proxy from deploy/ started in front of a broker: require skips
// the test when the program is not available; start returns its base URL
// (http://127.0.0.1:PORT) once it answers.
type proxyKind struct {
	name    string
	require func(t *testing.T) string
	start   func(t *testing.T, upstream string) string
}

var proxies = []proxyKind{
	{"nginx", requireNginx, startNginx},
	{"caddy", requireCaddy, startCaddy},
}

func requireNginx(t *testing.T) string {
	return requireTool(t, "nginx", "ensure-nginx.sh", "NGINX_TESTS")
}
func requireCaddy(t *testing.T) string {
	return requireTool(t, "caddy", "ensure-caddy.sh", "CADDY_TESTS")
}

// TestReverseProxy runs each recipe, as written, in front of the broker:
// a subscriber connected through the proxy receives an event posted
// through the proxy with the secret; without the secret the webhook
// refuses it; and with no secret configured, the webhook that accepts a
// loopback sender refuses the same sender through the proxy, because the
// proxy says it forwarded the request.
func TestReverseProxy(t *testing.T) {
	for _, kind := range proxies {
		t.Run(kind.name, func(t *testing.T) {
			kind.require(t)
			requireDirectus(t)
			withSecret := startBroker(t, "broker-secret", map[string]string{"WEBHOOK_SECRET": secret})
			front := kind.start(t, withSecret.addr)
			wsFront := "ws" + strings.TrimPrefix(front, "http") + "/websocket"

			if s := httpStatus(front + "/healthz"); s != http.StatusOK {
				t.Fatalf("/healthz through %s: HTTP %d", kind.name, s)
			}
			// The recipe keeps /metrics off the public side.
			if s := httpStatus(front + "/metrics"); s != http.StatusNotFound {
				t.Errorf("/metrics through %s: HTTP %d, want 404", kind.name, s)
			}
			if s := httpStatus("http://" + withSecret.addr + "/metrics"); s != http.StatusOK {
				t.Errorf("/metrics on the broker itself: HTTP %d, want 200", s)
			}

			// The token travels in the Authorization header of the upgrade.
			c := subscribe(t, wsFront, adminToken)
			key := createItem(t, kind.name+" through the proxy")
			if status, body := postWebhook(t, front, secret, key); status != http.StatusAccepted {
				t.Fatalf("webhook with the secret through %s: HTTP %d %s", kind.name, status, body)
			}
			expectUpdate(t, c, key, kind.name+" through the proxy")
			if status, _ := postWebhook(t, front, "", key); status != http.StatusUnauthorized {
				t.Fatalf("webhook without the secret through %s: HTTP %d, want 401", kind.name, status)
			}
			if status, _ := postWebhook(t, front, "not-the-secret", key); status != http.StatusUnauthorized {
				t.Fatalf("webhook with a wrong secret through %s: HTTP %d, want 401", kind.name, status)
			}
			c.Quiet(t, "after-refused")

			// No secret configured (with the opt-in): loopback senders are
			// accepted, forwarded requests are not.
			open := startBroker(t, "broker-no-secret", map[string]string{"WEBHOOK_INSECURE_LOOPBACK": "true"})
			openFront := kind.start(t, open.addr)
			c2 := subscribe(t, "ws"+strings.TrimPrefix(openFront, "http")+"/websocket", adminToken)
			if status, body := postWebhook(t, "http://"+open.addr, "", key); status != http.StatusAccepted {
				t.Fatalf("webhook without a secret, directly from loopback: HTTP %d %s", status, body)
			}
			expectUpdate(t, c2, key, kind.name+" through the proxy")
			if status, _ := postWebhook(t, openFront, "", key); status != http.StatusUnauthorized {
				t.Fatalf("webhook without a secret through %s (which adds X-Forwarded-For): HTTP %d, want 401", kind.name, status)
			}
			c2.Quiet(t, "after-forwarded")
		})
	}
}

// The recipe's access log records the path of a request, never its query
// string: a browser's WebSocket carries its token as ?access_token=.
func TestNginxLogsNoToken(t *testing.T) {
	requireNginx(t)
	requireDirectus(t)
	b := startBroker(t, "broker-log", map[string]string{"WEBHOOK_SECRET": secret})
	front, accessLog := startNginxLogged(t, b.addr)
	const token = "tok-SHOULD-NOT-BE-LOGGED"
	if s := httpStatus(front + "/websocket?access_token=" + token); s == 0 {
		t.Fatal("no answer through nginx")
	}
	// nginx (one worker) writes a request's log line when it frees the
	// request, before it reads the next one: the answer to a second
	// request orders the first one's line before it.
	if s := httpStatus(front + "/healthz"); s != http.StatusOK {
		t.Fatalf("/healthz through nginx: HTTP %d", s)
	}
	log := readFile(accessLog)
	if !strings.Contains(log, "GET /websocket ") {
		t.Fatalf("the access log does not name the request:\n%s", log)
	}
	if strings.Contains(log, token) || strings.Contains(log, "access_token") {
		t.Fatalf("the access log records query strings:\n%s", log)
	}
}

// TestNginxTimeouts checks the recipe's timeouts against the broker's
// heartbeat defaults: nginx must not close a quiet WebSocket before the
// broker's own pings would.
func TestNginxTimeouts(t *testing.T) {
	recipe := repoFile(t, "deploy/nginx/directus-ws-broker.conf")
	def := config.Default()
	for _, directive := range []string{"proxy_read_timeout", "proxy_send_timeout"} {
		m := regexp.MustCompile(`(?m)^\s*` + directive + `\s+(\S+);`).FindStringSubmatch(recipe)
		if m == nil {
			t.Errorf("%s is not set in the recipe", directive)
			continue
		}
		d, err := nginxDuration(m[1])
		if err != nil {
			t.Fatalf("%s %s: %v", directive, m[1], err)
		}
		if d < 2*def.PongWait || d < 2*def.PingPeriod {
			t.Errorf("%s %s: want at least twice PONG_WAIT (%s)", directive, m[1], def.PongWait)
		}
	}
	for _, want := range []string{
		"proxy_http_version 1.1;",
		"proxy_set_header Upgrade $http_upgrade;",
		"proxy_set_header Connection $connection_upgrade;",
		"map $http_upgrade $connection_upgrade",
		"proxy_set_header X-Forwarded-For",
	} {
		if !strings.Contains(recipe, want) {
			t.Errorf("the recipe lacks %q", want)
		}
	}
}

// nginxDuration parses nginx's time values ("1h", "3600s", "90m", "300").
func nginxDuration(v string) (time.Duration, error) {
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(v)
}

// replaceOnce replaces the one occurrence of old in s, failing the test
// when the file no longer has exactly one: the test and the recipe must
// change together.
func replaceOnce(t testing.TB, file, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%s: want exactly one %q to template, found %d", file, old, n)
	}
	return strings.Replace(s, old, new, 1)
}

// startNginx runs Debian's nginx with deploy/nginx/directus-ws-broker.conf
// as it is, except its listen line (a free loopback port), its access
// log's path and the upstreams file (upstream): inside a minimal main
// configuration whose paths all lie in a temporary directory. It retries
// with another port when one was taken meanwhile.
func startNginx(t *testing.T, upstream string) string {
	base, _ := startNginxLogged(t, upstream)
	return base
}

// startNginxLogged is startNginx, also returning the recipe's access log.
func startNginxLogged(t *testing.T, upstream string) (base, accessLog string) {
	t.Helper()
	nginx := requireNginx(t)
	const recipeFile = "deploy/nginx/directus-ws-broker.conf"
	recipe := repoFile(t, recipeFile)
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
			t.Fatal(err)
		}
		port := freePort(t)
		site := replaceOnce(t, recipeFile, recipe, "    listen 80;\n", fmt.Sprintf("    listen 127.0.0.1:%d;\n", port))
		accessLog = filepath.Join(dir, "recipe-access.log")
		site = replaceOnce(t, recipeFile, site, "access_log /var/log/nginx/access.log directus_ws_broker;", "access_log "+accessLog+" directus_ws_broker;")
		for name, text := range map[string]string{
			"site.conf":                    site,
			"directus-ws-broker.upstreams": "server " + upstream + ";\n",
			"nginx.conf":                   nginxMain(dir),
		} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		args := []string{nginx, "-e", filepath.Join(dir, "error.log"), "-p", dir + "/", "-c", filepath.Join(dir, "nginx.conf")}
		if out, err := execOutput(t, append(args, "-t")...); err != nil {
			t.Fatalf("nginx -t refuses the recipe: %v\n%s", err, out)
		}
		p := startProc(t, fmt.Sprintf("nginx-%d", attempt), dir, []string{"PATH=" + os.Getenv("PATH")}, args...)
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		if up := waitProxy(t, p, base, filepath.Join(dir, "error.log")); up {
			return base, accessLog
		}
		if attempt == 3 {
			t.Fatalf("nginx could not bind a free port three times:\n%s", readFile(filepath.Join(dir, "error.log")))
		}
	}
}

// nginxMain is the main configuration around the recipe: nothing outside
// dir is written, nginx stays in the foreground (the test owns it).
func nginxMain(dir string) string {
	tmp := filepath.Join(dir, "tmp")
	return fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;
events {
    worker_connections 256;
}
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[1]s/site.conf;
}
`, dir, tmp)
}

// startCaddy runs Debian's Caddy with deploy/caddy/Caddyfile as it is,
// except its site address (plain HTTP on a free loopback port) and its
// upstream, with Caddy's admin endpoint off and its state in a temporary
// directory.
func startCaddy(t *testing.T, upstream string) string {
	t.Helper()
	caddy := requireCaddy(t)
	const file = "deploy/caddy/Caddyfile"
	recipe := repoFile(t, file)
	recipe = replaceOnce(t, file, recipe, "\t\treverse_proxy 127.0.0.1:8080\n", "\t\treverse_proxy "+upstream+"\n")
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		port := freePort(t)
		site := replaceOnce(t, file, recipe, "broker.example.com {\n", fmt.Sprintf("http://127.0.0.1:%d {\n", port))
		site = "{\n\tadmin off\n}\n\n" + site
		conf := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(conf, []byte(site), 0o644); err != nil {
			t.Fatal(err)
		}
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
		if out, err := execIn(t, "", env, caddy, "validate", "--config", conf, "--adapter", "caddyfile"); err != nil {
			t.Fatalf("caddy validate refuses the Caddyfile: %v\n%s", err, out)
		}
		p := startProc(t, fmt.Sprintf("caddy-%d", attempt), dir, env, caddy, "run", "--config", conf, "--adapter", "caddyfile")
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		if waitProxy(t, p, base, p.log) {
			return base
		}
		if attempt == 3 {
			t.Fatalf("caddy could not bind a free port three times:\n%s", p.logText())
		}
	}
}

// waitProxy waits until base/healthz answers 200 through the proxy p. It
// returns false when p exited because its port was taken (the caller
// retries), and fails the test for any other exit or after 30 s.
func waitProxy(t *testing.T, p *proc, base, errorLog string) bool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for httpStatus(base+"/healthz") != http.StatusOK {
		if p.Exited() {
			log := readFile(errorLog)
			if strings.Contains(log, "address already in use") || strings.Contains(log, "Address already in use") {
				return false
			}
			t.Fatalf("%s exited:\n%s", p.name, log)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s/healthz not 200 within 30s:\n%s", p.name, base, readFile(errorLog))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
