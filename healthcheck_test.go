package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthzURL(t *testing.T) {
	for _, tc := range []struct{ addr, want, err string }{
		{"0.0.0.0:8080", "http://127.0.0.1:8080/healthz", ""},
		{":8080", "http://127.0.0.1:8080/healthz", ""},
		{"[::]:9000", "http://[::1]:9000/healthz", ""},
		{"127.0.0.1:8080", "http://127.0.0.1:8080/healthz", ""},
		{"10.1.2.3:80", "http://10.1.2.3:80/healthz", ""},
		{"127.0.0.1:0", "", "port 0"},
		{"8080", "", "missing port"},
	} {
		got, err := healthzURL(tc.addr)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("healthzURL(%q): want an error with %q, got %q, %v", tc.addr, tc.err, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("healthzURL(%q) = %q, %v; want %q", tc.addr, got, err, tc.want)
		}
	}
}

// TestHealthcheckCommand runs the subcommand through run, as the image's
// HEALTHCHECK does, against servers answering 200 and 503 and against a
// closed port; every failure must be exit status 1 (2 is reserved by
// container engines).
func TestHealthcheckCommand(t *testing.T) {
	var paths []string
	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		w.WriteHeader(http.StatusOK)
	}))
	defer healthy.Close()
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedAddr := closed.Listener.Addr().String()
	closed.Close()

	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		healthy bool
	}{
		{"LISTEN_ADDR", []string{"healthcheck"}, map[string]string{"LISTEN_ADDR": healthy.Listener.Addr().String()}, true},
		{"--url", []string{"healthcheck", "--url", healthy.URL + "/healthz"}, nil, true},
		{"503", []string{"healthcheck", "--url", sick.URL + "/healthz"}, nil, false},
		{"nothing listening", []string{"healthcheck"}, map[string]string{"LISTEN_ADDR": closedAddr}, false},
		{"port 0", []string{"healthcheck"}, map[string]string{"LISTEN_ADDR": "127.0.0.1:0"}, false},
		{"bad flag", []string{"healthcheck", "--nope"}, nil, false},
		{"invalid config", []string{"healthcheck"}, map[string]string{"LISTEN_ADDR": "nonsense"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tc.args, env(tc.env), &stdout, &stderr)
			if tc.healthy {
				if err != nil || !strings.Contains(stdout.String(), "HTTP 200") {
					t.Fatalf("want healthy, got %v (stdout %q)", err, stdout.String())
				}
				return
			}
			if err == nil {
				t.Fatalf("want an error, got none (stdout %q)", stdout.String())
			}
			if code := exitCode(err); code != 1 {
				t.Fatalf("exit status %d for %v; want 1", code, err)
			}
		})
	}
	for _, p := range paths {
		if p != "/healthz" {
			t.Errorf("healthcheck asked %q, want /healthz", p)
		}
	}
}
