package handlers

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestStopServingAnswersAcceptedConnections: a call on a connection the
// server accepted before it stopped listening, whose request arrives
// after the shutdown began, is answered (here 503, as the webhook answers
// while closing) instead of being closed unanswered as net/http does with
// requests it reads during its own Shutdown (a Flow saw EOF: chaos-quick
// sigterm, "1 unanswered").
func TestStopServingAnswersAcceptedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := newListener(ln)
	hs := &http.Server{ConnState: l.connState, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
	})}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(l) }()
	t.Cleanup(func() { _ = hs.Close(); <-served })

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	until(t, "the server accepted the connection", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.unread) == 1
	})
	stopped := make(chan error, 1)
	go func() { stopped <- stopServing(t.Context(), hs, l) }()
	until(t, "the listener refuses connections", func() bool {
		d, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return true
		}
		d.Close()
		return false
	})
	if _, err := c.Write([]byte("POST /webhook HTTP/1.1\r\nHost: broker\r\nContent-Length: 0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the call got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// until waits (up to 10 s) for cond, checking it every millisecond.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
