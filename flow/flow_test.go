package flow

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// The Flow is installed against a real Directus in the main package's
// flow_test.go; these tests cover what needs no Directus: spec validation,
// and how Directus's answers to the checks map to errors, before any write.

func TestFlowSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec Spec
		want string // substring of the error; "" for valid
	}{
		{"minimal", Spec{WebhookURL: "http://127.0.0.1:8080/webhook"}, ""},
		{"https with collections", Spec{WebhookURL: "https://broker.example/webhook", Collections: []string{"a", " b ", "a", ""}}, ""},
		{"no url", Spec{}, "must be an absolute http(s) URL"},
		{"relative url", Spec{WebhookURL: "/webhook"}, "must be an absolute http(s) URL"},
		{"ftp url", Spec{WebhookURL: "ftp://host/webhook"}, "must be an absolute http(s) URL"},
		{"bad header", Spec{WebhookURL: "http://h/webhook", Secret: "s", SecretHeader: "X Secret"}, "not a valid HTTP header name"},
		{"header with colon", Spec{WebhookURL: "http://h/webhook", Secret: "s", SecretHeader: "X-Secret:"}, "not a valid HTTP header name"},
		{"secret without header", Spec{WebhookURL: "http://h/webhook", Secret: "s"}, "not a valid HTTP header name"},
		{"system collection", Spec{WebhookURL: "http://h/webhook", Collections: []string{"articles", "directus_users"}}, "directus_users is a Directus system collection"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestFlowSpecDefaultsAndDedup(t *testing.T) {
	s, err := Spec{WebhookURL: "http://h/webhook", Collections: []string{"a", " b ", "a", ""}}.normalized()
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != DefaultName {
		t.Errorf("default name %q", s.Name)
	}
	if strings.Join(s.Collections, ",") != "a,b" {
		t.Errorf("collections = %q, want [a b]", s.Collections)
	}
}

// fakeDirectus answers the read-only calls of the checks with the given
// statuses and records every method it sees.
type fakeDirectus struct {
	ping, flows, globals, collection int
	globalsBody                      string

	mu      sync.Mutex
	methods []string
}

func (f *fakeDirectus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.methods = append(f.methods, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	answer := func(status int, body string) {
		if status >= 300 {
			body = `{"errors":[{"message":"no","extensions":{"code":"X"}}]}`
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
	switch {
	case r.URL.Path == "/server/ping":
		answer(f.ping, "pong")
	case r.URL.Path == "/flows" && r.Method == http.MethodGet:
		answer(f.flows, `{"data":[]}`)
	case r.URL.Path == "/policies/me/globals":
		answer(f.globals, f.globalsBody)
	case strings.HasPrefix(r.URL.Path, "/collections/"):
		answer(f.collection, `{"data":{"collection":"c","schema":{"name":"c"}}}`)
	default:
		answer(http.StatusTeapot, "")
	}
}

func (f *fakeDirectus) writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var w []string
	for _, m := range f.methods {
		if !strings.HasPrefix(m, "GET ") {
			w = append(w, m)
		}
	}
	return w
}

func TestInstallFlowRefusesBadInputWithoutWriting(t *testing.T) {
	admin := `{"data":{"admin_access":true,"app_access":true}}`
	tests := []struct {
		name string
		fake *fakeDirectus
		want error
		text string
	}{
		{"not Directus", &fakeDirectus{ping: 404}, nil, "GET /server/ping answered 404: is this Directus?"},
		{"token refused", &fakeDirectus{ping: 200, flows: 401}, ErrTokenRefused, "token refused by Directus"},
		{"no flow rights", &fakeDirectus{ping: 200, flows: 403}, ErrNotAdmin, "token is not an admin token"},
		{"flows granted, not admin", &fakeDirectus{ping: 200, flows: 200, globals: 200, globalsBody: `{"data":{"admin_access":false}}`}, ErrNotAdmin, "token is not an admin token"},
		{"unknown collection (403)", &fakeDirectus{ping: 200, flows: 200, globals: 200, globalsBody: admin, collection: 403}, ErrUnknownCollection, "unknown collection c"},
		{"unknown collection (404)", &fakeDirectus{ping: 200, flows: 200, globals: 200, globalsBody: admin, collection: 404}, ErrUnknownCollection, "unknown collection c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := tt.fake
			srv := httptest.NewServer(fake)
			defer srv.Close()
			c, err := directus.NewClient(srv.URL, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Install(context.Background(), c, "tok", Spec{WebhookURL: "http://127.0.0.1:1/webhook", Collections: []string{"c"}})
			if err == nil || !strings.HasSuffix(err.Error(), tt.text) {
				t.Fatalf("Install error = %v, want %q", err, tt.text)
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v is not %v", err, tt.want)
			}
			if w := fake.writes(); len(w) > 0 {
				t.Errorf("wrote to Directus despite the bad input: %v", w)
			}
		})
	}
}

func TestCheckAdminUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c, err := directus.NewClient("http://"+addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckAdmin(context.Background(), c, "tok")
	var ue *UnreachableError
	if !errors.As(err, &ue) || !directus.Unavailable(err) {
		t.Fatalf("CheckAdmin = %v, want an *UnreachableError that Unavailable reports", err)
	}
	want := "cannot reach Directus at http://" + addr + ": connect: connection refused"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
}
