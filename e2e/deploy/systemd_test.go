//go:build linux

package deploy

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/config"
)

const (
	unitFile = "deploy/systemd/directus-ws-broker.service"
	unitName = "directus-ws-broker.service"
	envFile  = "deploy/systemd/env.example"
)

// TestSystemdUnit checks the unit with systemd's own parser. systemd is not
// running here (nor needed): `systemd-analyze verify --root` loads the unit
// from a temporary root laid out as on a server (the binary at ExecStart's
// path, the environment file, the distribution's units for the targets it
// names), and `security --offline` scores its hardening.
func TestSystemdUnit(t *testing.T) {
	analyze := requireTool(t, "systemd-analyze", "ensure-systemd.sh", "SYSTEMD_TESTS")
	r := t.TempDir()
	copyFile(t, binary, filepath.Join(r, "usr/local/bin/directus-ws-broker"), 0o755)
	copyFile(t, filepath.Join(root, unitFile), filepath.Join(r, "etc/systemd/system", unitName), 0o644)
	copyFile(t, filepath.Join(root, envFile), filepath.Join(r, "etc/directus-ws-broker/env"), 0o640)
	units := "/usr/lib/systemd/system"
	if _, err := os.Stat(units); err != nil {
		units = "/lib/systemd/system"
	}
	if err := os.MkdirAll(filepath.Join(r, "usr/lib/systemd"), 0o755); err != nil {
		t.Fatal(err)
	}
	// cp -a: the directory holds symbolic links (aliases, masks).
	if out, err := execOutput(t, "cp", "-a", units, filepath.Join(r, "usr/lib/systemd/system")); err != nil {
		t.Fatalf("copying the distribution's units: %v\n%s", err, out)
	}

	// verify exits 0 on unknown keys and bad values (it only warns): any
	// output is a failure.
	out, err := execOutput(t, analyze, "verify", "--root="+r, unitName)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// Exposure is 0.0 (locked down) to 10.0 (unprotected); the threshold
	// counts in tenths.
	out, err = execOutput(t, analyze, "security", "--offline=yes", "--root="+r, "--threshold=20", unitName)
	m := regexp.MustCompile(`Overall exposure level for ` + regexp.QuoteMeta(unitName) + `: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v, no exposure level in:\n%s", err, out)
	}
	t.Logf("systemd-analyze security --offline: exposure %s (0 = locked down, 10 = unprotected)", m[1])
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure %s is over 2.0: %v\n%s", m[1], err, out)
	}
}

// TestSystemdUnitSettings checks the unit's values against the broker's
// defaults, and that the example environment file is a valid configuration
// for the binary.
func TestSystemdUnitSettings(t *testing.T) {
	unit := parseUnit(t, strings.NewReader(repoFile(t, unitFile)))
	def := config.Default()
	for key, want := range map[string]string{
		"DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"NoNewPrivileges": "yes", "CapabilityBoundingSet": "", "Restart": "on-failure",
		"EnvironmentFile": "/etc/directus-ws-broker/env", "ExecStart": "/usr/local/bin/directus-ws-broker serve",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
		// Exit status 2 is a configuration error (main.go's exitCode).
		"RestartPreventExitStatus": "2",
	} {
		if got, ok := unit[key]; !ok || got[0] != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if got := unit["SystemCallFilter"]; len(got) == 0 || got[0] != "@system-service" {
		t.Errorf("SystemCallFilter=%q, want @system-service first", got)
	}
	if n, err := strconv.Atoi(first(unit["LimitNOFILE"])); err != nil || n < 2*def.MaxConnections {
		t.Errorf("LimitNOFILE=%q: want room for MAX_CONNECTIONS (%d) and more", unit["LimitNOFILE"], def.MaxConnections)
	}
	// The process exits within SHUTDOWN_TIMEOUT + 1 s (chaos: "exit within
	// shutdown_timeout (+1 s)"); systemd must not SIGKILL it before.
	if d, err := time.ParseDuration(first(unit["TimeoutStopSec"])); err != nil || d <= def.ShutdownTimeout+time.Second {
		t.Errorf("TimeoutStopSec=%q: want more than SHUTDOWN_TIMEOUT + 1 s (%s)", unit["TimeoutStopSec"], def.ShutdownTimeout+time.Second)
	}

	// The example environment file, read as systemd reads it, is a valid
	// configuration.
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(repoFile(t, envFile)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not KEY=VALUE: %q", envFile, line)
		}
		env[k] = v
	}
	environ := []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	// In an empty directory: no ./config.yaml is read.
	cmdOut, err := execIn(t, t.TempDir(), environ, binary, "checkconfig")
	if err != nil || !strings.Contains(cmdOut, "configuration is valid") {
		t.Fatalf("checkconfig with %s: %v\n%s", envFile, err, cmdOut)
	}
}

// parseUnit reads a unit file's KEY=VALUE lines (all sections, values in
// order of appearance).
func parseUnit(t testing.TB, r io.Reader) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit: not KEY=VALUE: %q", line)
		}
		out[k] = append(out[k], v)
	}
	return out
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// copyFile copies src to dst (creating dst's directory) with mode.
func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
