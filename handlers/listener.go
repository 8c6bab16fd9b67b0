package handlers

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// listener is the HTTP listener, closed by the shutdown itself before the
// http.Server's own Shutdown runs. Why: once http.Server.Shutdown has begun,
// a connection it accepted earlier whose request it reads afterwards is
// closed without an answer (net/http drops requests read while shutting
// down), so a Flow's call that raced the shutdown saw EOF and could not
// tell whether it was published. Closing the listener first and waiting
// until every accepted connection's request has reached a handler (which
// answers 503 SHUTTING_DOWN) leaves only calls that were never accepted:
// those the kernel refuses or resets, which a client can retry.
type listener struct {
	net.Listener
	closeOnce sync.Once
	closeErr  error

	mu sync.Mutex
	// unread are the accepted connections whose first request has not
	// been read yet; accepting counts Accept calls in progress (one may
	// return a connection just as the listener closes). drained is closed
	// whenever both are zero.
	unread    map[net.Conn]struct{}
	accepting int
	drained   chan struct{}
}

func newListener(ln net.Listener) *listener {
	l := &listener{Listener: ln, unread: map[net.Conn]struct{}{}, drained: make(chan struct{})}
	close(l.drained)
	return l
}

// Accept counts the connection as unread until its request is read.
func (l *listener) Accept() (net.Conn, error) {
	l.change(func() { l.accepting++ })
	c, err := l.Listener.Accept()
	l.change(func() {
		l.accepting--
		if err == nil {
			l.unread[c] = struct{}{}
		}
	})
	return c, err
}

// Close closes the listener once; http.Server closes it again in its
// Shutdown, which must not turn into an error.
func (l *listener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

// connState is the http.Server's ConnState hook: a connection leaving
// StateNew has had its first request read (or is gone).
func (l *listener) connState(c net.Conn, st http.ConnState) {
	if st == http.StateNew {
		return
	}
	l.change(func() { delete(l.unread, c) })
}

// change applies f and keeps drained in step.
func (l *listener) change(f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	wasDrained := l.accepting == 0 && len(l.unread) == 0
	f()
	isDrained := l.accepting == 0 && len(l.unread) == 0
	switch {
	case wasDrained && !isDrained:
		l.drained = make(chan struct{})
	case !wasDrained && isDrained:
		close(l.drained)
	}
}

// unreadGrace bounds how long a shutdown waits for accepted connections to
// send their request: a client that connects and sends nothing (a TCP
// health check) must not hold the shutdown to its deadline.
const unreadGrace = time.Second

// closeAndWait closes the listener and waits, within ctx and unreadGrace,
// until every connection it accepted has had its first request read.
func (l *listener) closeAndWait(ctx context.Context) {
	_ = l.Close()
	l.mu.Lock()
	drained := l.drained
	l.mu.Unlock()
	t := time.NewTimer(unreadGrace)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
	case <-ctx.Done():
	}
}

// stopServing closes l and waits for the requests of the connections it
// accepted (see listener), then shuts hs down within ctx.
func stopServing(ctx context.Context, hs *http.Server, l *listener) error {
	if l != nil {
		l.closeAndWait(ctx)
	}
	if err := hs.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
