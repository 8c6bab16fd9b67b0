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

// slowDirectus is a reverse proxy to the real Directus that delays item
// reads by a settable time: a Directus too slow for the event rate, which
// the real one cannot be made on demand.
type slowDirectus struct {
	URL   string
	srv   *http.Server
	delay atomic.Int64 // nanoseconds
}

func newSlowDirectus(target string) (*slowDirectus, error) {
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
		if d := time.Duration(p.delay.Load()); d > 0 && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/items/") {
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
