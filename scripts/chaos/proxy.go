package main

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// slowDirectus is a reverse proxy to the real Directus that delays the
// requests slow picks by a settable time: a Directus too slow for the
// event rate, or a reread that takes long, which the real one cannot be
// made on demand.
type slowDirectus struct {
	URL   string
	srv   *http.Server
	delay atomic.Int64 // nanoseconds
	// held counts the requests delayed so far.
	held atomic.Int64
}

// itemReads picks the broker's reads of items.
func itemReads(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/items/")
}

// madeWith picks the requests made with token (the service token's: the
// rereads of the permission model).
func madeWith(token string) func(*http.Request) bool {
	return func(r *http.Request) bool { return r.Header.Get("Authorization") == "Bearer "+token }
}

func newSlowDirectus(target string, slow func(*http.Request) bool) (*slowDirectus, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &slowDirectus{URL: "http://" + ln.Addr().String()}
	proxy := httputil.NewSingleHostReverseProxy(u)
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d := time.Duration(p.delay.Load()); d > 0 && slow(r) {
			p.held.Add(1)
			select {
			case <-time.After(d):
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

func (p *slowDirectus) close() { _ = p.srv.Close() }
