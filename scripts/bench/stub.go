package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The Directus stub stands in for Directus where the real one would only
// measure Directus: it accepts every token (GET /users/me), answers the
// broker's subscribe probes (GET /items/<c>?limit=0) with no items, and
// answers item reads (GET /items/<c>/<key>) with a fixed-size item at once.
// With -upstream, item reads can be proxied to a real Directus instead
// (POST /_bench/proxy?on=1|0), so a scenario can time deliveries "read
// included" while its thousands of subscribe probes stay cheap.
//
// It also serves a reference fan-out (GET /_bench/ws, POST
// /_bench/broadcast?key=N): the simplest Go fan-out there is — gorilla, one
// writer goroutine per connection, the frame encoded once — timed with the
// same clients, so the table shows what part of a fan-out time is the
// machine, the kernel and this generator rather than the broker.
//
// It runs as a separate process (this program with the first argument
// "stub"), so its CPU and file descriptors are its own.

// stubMain is the entry point of the stub process.
func stubMain(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("stub", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := fs.String("upstream", "", "real Directus to proxy item reads to when proxying is on")
	proxyOn := fs.Bool("proxy", false, "proxy item reads from the start")
	proxyAll := fs.Bool("proxy-all", false, "proxy every request to -upstream, counting them by kind (GET /_bench/counts)")
	itemBytes := fs.Int("item-bytes", 64, "size of the title of the items it answers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := &stub{title: strings.Repeat("x", *itemBytes), fan: newFanout()}
	if *upstream != "" {
		u, err := url.Parse(*upstream)
		if err != nil {
			return fmt.Errorf("stub: -upstream: %w", err)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		s.upstream = &httputil.ReverseProxy{
			Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = u.Host },
			Transport: tr,
		}
		s.proxy.Store(*proxyOn)
		s.all = *proxyAll
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

type stub struct {
	title    string
	upstream *httputil.ReverseProxy
	proxy    atomic.Bool
	fan      *fanout
	// all proxies every request (a counting proxy in front of the real
	// Directus: what the broker asks of it).
	all    bool
	countM sync.Mutex
	counts map[string]int
}

// kind names what a request to Directus is for, as the broker makes them.
func kind(r *http.Request) string {
	path := r.URL.Path
	switch {
	case path == "/users/me":
		return "token checks (GET /users/me)"
	case path == "/users":
		return "users' roles (GET /users)"
	case strings.HasPrefix(path, "/items/") && strings.Count(path, "/") == 3:
		return "item reads, one key"
	case strings.HasPrefix(path, "/items/") && r.URL.Query().Get("limit") == "0":
		return "subscribe checks (limit=0)"
	case strings.HasPrefix(path, "/items/"):
		return "item reads, batches and snapshots"
	case path == "/roles" || path == "/access" || path == "/policies" || path == "/permissions" || path == "/relations":
		return "permission model"
	case strings.HasPrefix(path, "/fields/"):
		return "primary keys (GET /fields)"
	}
	return "other"
}

func (s *stub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if s.all && !strings.HasPrefix(path, "/_bench/") {
		s.countM.Lock()
		if s.counts == nil {
			s.counts = map[string]int{}
		}
		s.counts[kind(r)]++
		s.countM.Unlock()
		s.upstream.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	switch {
	case path == "/_bench/counts":
		s.countM.Lock()
		b, _ := json.Marshal(s.counts)
		if r.Method == http.MethodPost {
			s.counts = nil
		}
		s.countM.Unlock()
		_, _ = w.Write(b)
	case path == "/_bench/proxy" && r.Method == http.MethodPost:
		s.proxy.Store(r.URL.Query().Get("on") == "1" && s.upstream != nil)
		_, _ = io.WriteString(w, `{"proxy":`+strconv.FormatBool(s.proxy.Load())+`}`)
	case path == "/_bench/ws":
		s.fan.serveWS(w, r)
	case path == "/_bench/broadcast" && r.Method == http.MethodPost:
		key, err := strconv.Atoi(r.URL.Query().Get("key"))
		if err != nil {
			http.Error(w, "key must be a number", http.StatusBadRequest)
			return
		}
		s.fan.broadcast(key, s.title)
		w.WriteHeader(http.StatusAccepted)
	case path == "/users/me":
		_, _ = io.WriteString(w, `{"data":{"id":"00000000-0000-4000-8000-000000000001"}}`)
	case strings.HasPrefix(path, "/fields/"):
		// As Directus answers: the broker learns the primary key here to
		// read several keys in one request.
		_, _ = io.WriteString(w, `{"data":[{"field":"id","schema":{"is_primary_key":true}},{"field":"title","schema":{"is_primary_key":false}}]}`)
	case path == "/server/health" || path == "/server/ping":
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	case strings.HasPrefix(path, "/items/") && r.Method == http.MethodGet:
		parts := strings.Split(strings.TrimPrefix(path, "/items/"), "/")
		switch {
		case len(parts) == 1 && r.URL.Query().Get("filter") != "":
			s.items(w, r.URL.Query().Get("filter"))
		case len(parts) == 1:
			_, _ = io.WriteString(w, `{"data":[]}`)
		case len(parts) == 2 && s.proxy.Load():
			s.upstream.ServeHTTP(w, r)
		case len(parts) == 2:
			s.item(w, parts[1])
		default:
			http.NotFound(w, r)
		}
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"errors":[{"message":"not served by the bench's Directus stub","extensions":{"code":"ROUTE_NOT_FOUND"}}]}`)
	}
}

// items answers a batch read (filter {"id":{"_in":[keys]}}) with one item
// per key, as Directus does for a token that may read them all.
func (s *stub) items(w http.ResponseWriter, filter string) {
	var f struct {
		ID struct {
			In []json.RawMessage `json:"_in"`
		} `json:"id"`
	}
	if err := json.Unmarshal([]byte(filter), &f); err != nil {
		http.Error(w, `{"errors":[{"message":"bad filter","extensions":{"code":"INVALID_QUERY"}}]}`, http.StatusBadRequest)
		return
	}
	b := []byte(`{"data":[`)
	for i, raw := range f.ID.In {
		var key string
		if json.Unmarshal(raw, &key) != nil {
			key = string(raw)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, s.itemJSON(key)...)
	}
	b = append(b, "]}"...)
	_, _ = w.Write(b)
}

// item answers {"data":{"id":<key>,"title":"xxx..."}}; numeric keys are
// numbers, as Directus answers for integer primary keys.
func (s *stub) item(w http.ResponseWriter, key string) {
	b := make([]byte, 0, 48+len(key)+len(s.title))
	b = append(b, `{"data":`...)
	b = append(b, s.itemJSON(key)...)
	b = append(b, '}')
	_, _ = w.Write(b)
}

func (s *stub) itemJSON(key string) []byte {
	id := strconv.Quote(key)
	if _, err := strconv.ParseUint(key, 10, 63); err == nil {
		id = key
	}
	b := make([]byte, 0, 32+len(id)+len(s.title))
	b = append(b, `{"id":`...)
	b = append(b, id...)
	b = append(b, `,"title":"`...)
	b = append(b, s.title...)
	return append(b, `"}`...)
}

// fanout is the stub's reference fan-out.
type fanout struct {
	upgrader websocket.Upgrader
	mu       sync.RWMutex
	conns    map[chan []byte]struct{}
}

func newFanout() *fanout {
	return &fanout{
		upgrader: websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, WriteBufferPool: &sync.Pool{}},
		conns:    map[chan []byte]struct{}{},
	}
}

// serveWS accepts a subscriber: its first frame (a subscribe) is answered
// with SUBSCRIBED, then it receives every broadcast.
func (f *fanout) serveWS(w http.ResponseWriter, r *http.Request) {
	ws, err := f.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	if _, _, err := ws.ReadMessage(); err != nil {
		ws.Close()
		return
	}
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"collection":"c","type":"SUBSCRIBED"}`)); err != nil {
		ws.Close()
		return
	}
	ch := make(chan []byte, 64)
	f.mu.Lock()
	f.conns[ch] = struct{}{}
	f.mu.Unlock()
	go func() {
		defer func() {
			f.mu.Lock()
			delete(f.conns, ch)
			f.mu.Unlock()
			ws.Close()
		}()
		for {
			if _, _, err := ws.NextReader(); err != nil {
				return
			}
		}
	}()
	go func() {
		for frame := range ch {
			if ws.WriteMessage(websocket.TextMessage, frame) != nil {
				return
			}
		}
	}()
}

// broadcast sends one SUBSCRIPTION frame, shaped like the broker's, to
// every subscriber; a full queue drops the frame for that subscriber.
func (f *fanout) broadcast(key int, title string) {
	k := strconv.Itoa(key)
	frame := []byte(`{"type":"SUBSCRIPTION","action":"update","collection":"c","keys":["` + k +
		`"],"payload":{"title":"` + title + `"},"data":[{"id":` + k + `,"title":"` + title + `"}]}`)
	f.mu.RLock()
	defer f.mu.RUnlock()
	for ch := range f.conns {
		select {
		case ch <- frame:
		default:
		}
	}
}
