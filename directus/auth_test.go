package directus

import (
	"context"
	"net/http"
	"net/http/httptest"
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
	a := NewAuthenticator(c, time.Minute)
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
