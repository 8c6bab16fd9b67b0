package directus

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Concurrent checks of one token (a user's tabs reconnecting at once) make
// one /users/me; a cached answer makes none; Fresh asks again.
func TestAuthenticatorSharesChecks(t *testing.T) {
	var calls atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			<-release
		}
		_, _ = w.Write([]byte(`{"data":{"id":"u1"}}`))
	}))
	defer srv.Close()
	c, _ := NewClient(srv.URL, 5*time.Second)
	a := NewAuthenticator(c, time.Minute, 0)
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if id, err := a.Validate(context.Background(), "tok"); err != nil || id.UserID != "u1" {
				t.Errorf("validate: %v %v", id, err)
			}
		}()
	}
	for {
		a.mu.Lock()
		_, inflight := a.flights["tok"]
		a.mu.Unlock()
		if inflight && calls.Load() == 1 {
			break
		}
	}
	close(release)
	wg.Wait()
	if n := calls.Load(); n > 2 {
		t.Fatalf("%d calls for ten concurrent checks of one token", n)
	}
	before := calls.Load()
	if _, err := a.Validate(context.Background(), "tok"); err != nil || calls.Load() != before {
		t.Fatalf("cached check made a call (%v)", err)
	}
	if _, err := a.Fresh(context.Background(), "tok"); err != nil || calls.Load() != before+1 {
		t.Fatalf("Fresh must ask Directus (%v)", err)
	}
}

// A refused token is refused again without a call for the refusal TTL, and
// an expired JWT is refused without any call.
func TestAuthenticatorCachesRefusals(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"message":"Invalid user credentials.","extensions":{"code":"INVALID_CREDENTIALS"}}]}`))
	}))
	defer srv.Close()
	c, _ := NewClient(srv.URL, 5*time.Second)
	a := NewAuthenticator(c, time.Minute, 10*time.Second)
	now := time.Now()
	a.now = func() time.Time { return now }
	for range 5 {
		if _, err := a.Validate(context.Background(), "bad"); err == nil {
			t.Fatal("a refused token was accepted")
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d calls for five checks of one refused token, want 1", n)
	}
	now = now.Add(11 * time.Second)
	if _, err := a.Validate(context.Background(), "bad"); err == nil || calls.Load() != 2 {
		t.Fatalf("after the TTL Directus must be asked again (%d calls, %v)", calls.Load(), err)
	}
	expired := jwt(t, map[string]any{"iss": "directus", "id": "u1", "exp": now.Add(-time.Second).Unix()})
	if _, err := a.Validate(context.Background(), expired); err != ErrJWTExpired || calls.Load() != 2 {
		t.Fatalf("an expired JWT: want ErrJWTExpired without a call, got %v (%d calls)", err, calls.Load())
	}
}

// Client-caused requests beyond the slots wait in order; beyond the queue
// they are refused with ErrBusy at once; other requests are not limited.
func TestClientLimit(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/held" {
			arrived <- struct{}{}
			<-release
		}
		_, _ = w.Write([]byte(`{"data":{}}`))
	}))
	defer srv.Close()
	defer close(release)
	c, _ := NewClient(srv.URL, 5*time.Second)
	c.Limit(1, 1)
	ctx := ClientCaused(context.Background())
	done := make(chan error, 2)
	go func() { _, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"held"}}); done <- err }()
	<-arrived // the slot is taken
	go func() {
		_, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"queued"}})
		done <- err
	}()
	for c.Waiting() != 1 {
		runtime.Gosched()
	}
	if _, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"third"}}); err != ErrBusy {
		t.Fatalf("past the queue: want ErrBusy, got %v", err)
	}
	if _, err := c.Do(context.Background(), Request{Method: http.MethodGet, Segments: []string{"event-read"}}); err != nil {
		t.Fatalf("a request no client caused is not limited: %v", err)
	}
	release <- struct{}{}
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// jwt makes a token shaped like a Directus JWT with claims (unsigned: the
// Authenticator never verifies signatures, Directus does).
func jwt(t *testing.T, claims map[string]any) string {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc(b) + ".sig"
}
