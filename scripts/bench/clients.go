package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// sourceAddrs is how many loopback source addresses (127.0.0.1...) the
// connections are spread over: each (source, destination) pair has its own
// ~28,000 ephemeral ports, so 19,000 sockets plus earlier TIME_WAITs never
// exhaust them.
const sourceAddrs = 50

// sourceIP is the loopback source address of the i-th connection.
func sourceIP(i int) net.IP { return net.IPv4(127, 0, 0, byte(1+i%sourceAddrs)) }

// spreadDialer dials TCP from sourceIP(n) for the n-th call.
type spreadDialer struct {
	n       atomic.Int64
	dialers [sourceAddrs]*net.Dialer
}

func newSpreadDialer() *spreadDialer {
	d := &spreadDialer{}
	for i := range d.dialers {
		d.dialers[i] = &net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceIP(i)}, Timeout: 30 * time.Second}
	}
	return d
}

// smallReceiveBuffer makes the sockets dialed from now on ask the kernel
// for a receive buffer of only n bytes (set before connect, so the TCP
// window follows): a client that stops reading then stalls the server's
// writes after a few frames instead of after megabytes.
func (d *spreadDialer) smallReceiveBuffer(n int) {
	for _, nd := range d.dialers {
		nd.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
}

// DialContext has the signature of net.Dialer.DialContext.
func (d *spreadDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	i := int(d.n.Add(1)) % sourceAddrs
	return d.dialers[i].DialContext(ctx, network, addr)
}

// protocol is what differs between the broker's and Directus's endpoints.
type protocol struct {
	// hello runs on a new connection until its subscription is confirmed;
	// token is the connection's (for protocols that authenticate in a
	// frame).
	hello func(ws *websocket.Conn, collection, token string) error
	// headerToken sends the token in the upgrade's Authorization header.
	headerToken bool
	// key finds the event key of a received frame.
	key func(msg []byte) (int, bool)
}

// brokerProtocol subscribes with the broker's extension protocol (the
// token travels in the upgrade request's Authorization header).
var brokerProtocol = protocol{
	headerToken: true,
	hello: func(ws *websocket.Conn, collection, _ string) error {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","collection":"`+collection+`"}`)); err != nil {
			return err
		}
		return readUntil(ws, func(msg []byte) (bool, error) {
			switch {
			case bytes.Contains(msg, []byte(`"SUBSCRIBED"`)):
				return true, nil
			case bytes.Contains(msg, []byte(`"ERROR"`)):
				return false, fmt.Errorf("subscribe refused: %s", msg)
			}
			return false, nil
		})
	},
	key: brokerKey,
}

// directusProtocol authenticates (with token, or the connection's token
// when empty) and subscribes with Directus's own realtime protocol; the
// subscription's init message confirms it.
func directusProtocol(fixed string) protocol {
	return protocol{
		hello: func(ws *websocket.Conn, collection, token string) error {
			if fixed != "" {
				token = fixed
			}
			if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth","access_token":"`+token+`"}`)); err != nil {
				return err
			}
			err := readUntil(ws, func(msg []byte) (bool, error) {
				if bytes.Contains(msg, []byte(`"error"`)) {
					return false, fmt.Errorf("auth refused: %s", msg)
				}
				return bytes.Contains(msg, []byte(`"auth"`)) && bytes.Contains(msg, []byte(`"ok"`)), nil
			})
			if err != nil {
				return err
			}
			sub := `{"type":"subscribe","collection":"` + collection + `","uid":"s","query":{"fields":["*"]}}`
			if err := ws.WriteMessage(websocket.TextMessage, []byte(sub)); err != nil {
				return err
			}
			return readUntil(ws, func(msg []byte) (bool, error) {
				if bytes.Contains(msg, []byte(`"error"`)) {
					return false, fmt.Errorf("subscribe refused: %s", msg)
				}
				return bytes.Contains(msg, []byte(`"init"`)), nil
			})
		},
		key: directusKey,
	}
}

// graphQLProtocol subscribes with graphql-transport-ws (the broker's
// graphql_path or Directus's own /graphql): connection_init with the
// token, then the document; a ping answered after it proves the subscribe
// was handled (the protocol has no subscribe acknowledgement).
func graphQLProtocol(document func(collection string) string) protocol {
	return protocol{
		hello: func(ws *websocket.Conn, collection, token string) error {
			init := `{"type":"connection_init","payload":{"access_token":"` + token + `"}}`
			if err := ws.WriteMessage(websocket.TextMessage, []byte(init)); err != nil {
				return err
			}
			if err := readUntil(ws, func(msg []byte) (bool, error) {
				if !bytes.Contains(msg, []byte(`"connection_ack"`)) {
					return false, fmt.Errorf("connection_init answered %s", msg)
				}
				return true, nil
			}); err != nil {
				return err
			}
			sub, _ := json.Marshal(map[string]any{"id": "s", "type": "subscribe", "payload": map[string]any{"query": document(collection)}})
			if err := ws.WriteMessage(websocket.TextMessage, sub); err != nil {
				return err
			}
			if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)); err != nil {
				return err
			}
			return readUntil(ws, func(msg []byte) (bool, error) {
				if bytes.Contains(msg, []byte(`"NOT_COVERED"`)) {
					return false, nil // a notice (the Flow was installed after the broker last read it), as /realtime's
				}
				if !bytes.Contains(msg, []byte(`"pong"`)) {
					return false, fmt.Errorf("subscribe answered %s", msg)
				}
				return true, nil
			})
		},
		key: graphQLKey,
	}
}

// readUntil reads frames until done says so (or fails), answering
// Directus's pings on the way. It bounds the wait: a subscription that is
// not confirmed within a minute is a failure.
func readUntil(ws *websocket.Conn, done func(msg []byte) (bool, error)) error {
	_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
	defer ws.SetReadDeadline(time.Time{})
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		if isDirectusPing(msg) {
			if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"pong"}`)); err != nil {
				return err
			}
			continue
		}
		ok, err := done(msg)
		if err != nil || ok {
			return err
		}
	}
}

func isDirectusPing(msg []byte) bool { return len(msg) < 40 && bytes.Contains(msg, []byte(`"ping"`)) }

// pool holds the subscriber connections of one endpoint, each read by its
// own goroutine.
type pool struct {
	url    string
	token  string
	header http.Header
	// tokenOf, when set, is the token of the i-th connection (distinct
	// users); otherwise every connection uses token.
	tokenOf func(i int) string
	proto   protocol
	tr      *tracker
	dialer  websocket.Dialer
	spread  *spreadDialer
	// record makes every connection keep each delivery's latency.
	record atomic.Bool

	mu    sync.Mutex
	conns []*conn

	closing chan struct{}
	closed  sync.Once
	wg      sync.WaitGroup
	// dropped counts connections that ended while the pool was open.
	dropped atomic.Int64
	// retried counts dials answered 503 with Retry-After and made again.
	retried atomic.Int64
}

// conn is one subscriber.
type conn struct {
	ws         *websocket.Conn
	collection string
	paused     atomic.Bool
	resume     chan struct{}
	// closeCode is the close code the peer sent (-1: ended without one).
	closeCode atomic.Int32
	// received counts the event frames read.
	received atomic.Int64

	mu   sync.Mutex
	lats []time.Duration
}

// newPool makes a pool of subscribers of url (ws://...). The token goes
// into the upgrade's Authorization header unless empty.
func newPool(url, token string, proto protocol, tr *tracker) *pool {
	p := &pool{url: url, token: token, proto: proto, tr: tr, header: http.Header{}, spread: newSpreadDialer(), closing: make(chan struct{})}
	p.dialer = websocket.Dialer{
		NetDialContext:   p.spread.DialContext,
		HandshakeTimeout: time.Minute,
		// Small buffers: 19,000 connections live in this one process.
		ReadBufferSize:  1024,
		WriteBufferSize: 512,
		WriteBufferPool: &sync.Pool{},
	}
	return p
}

// size is the number of connections made (open or since dropped).
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// grow connects subscribers until the pool holds n; the i-th subscribes to
// collection(i). At most parallel handshakes run at once.
func (p *pool) grow(ctx context.Context, n, parallel int, collection func(i int) string) error {
	start := p.size()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := start; i < n && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c, err := p.connect(ctx, i, collection(i))
			if err != nil {
				cancel(fmt.Errorf("subscriber %d of %d: %w", i+1, n, err))
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

func (p *pool) connect(ctx context.Context, i int, collection string) (*conn, error) {
	token := p.token
	if p.tokenOf != nil {
		token = p.tokenOf(i)
	}
	header := p.header
	if p.proto.headerToken && token != "" {
		header = http.Header{"Authorization": {"Bearer " + token}}
	}
	ws, resp, err := p.dialer.DialContext(ctx, p.url, header)
	for retries := 0; err != nil && resp != nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" && retries < 20; retries++ {
		// As a well-behaved client: come back when told (the broker keeps
		// the turn of a token check it paces).
		secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		p.retried.Add(1)
		select {
		case <-time.After(time.Duration(max(secs, 1)) * time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		ws, resp, err = p.dialer.DialContext(ctx, p.url, header)
	}
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return nil, fmt.Errorf("dial: %w: HTTP %d %s", err, resp.StatusCode, body)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	if err := p.proto.hello(ws, collection, token); err != nil {
		ws.Close()
		return nil, err
	}
	c := &conn{ws: ws, collection: collection, resume: make(chan struct{})}
	p.wg.Add(1)
	go p.read(c)
	return c, nil
}

// read is a connection's receive loop: the receipt time is taken as soon as
// the whole frame is in, then the frame's key is found without decoding it.
func (p *pool) read(c *conn) {
	defer p.wg.Done()
	buf := make([]byte, 0, 512)
	for {
		if c.paused.Load() {
			select {
			case <-c.resume:
			case <-p.closing:
				return
			}
		}
		_, r, err := c.ws.NextReader()
		if err != nil {
			var ce *websocket.CloseError
			code := int32(-1)
			if errors.As(err, &ce) {
				code = int32(ce.Code)
			}
			c.closeCode.Store(code)
			select {
			case <-p.closing:
			default:
				p.dropped.Add(1)
			}
			return
		}
		if buf, err = readAll(r, buf[:0]); err != nil {
			continue // the next NextReader reports the failure
		}
		now := p.tr.now()
		key, ok := p.proto.key(buf)
		if !ok {
			switch {
			case isDirectusPing(buf):
				_ = c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"pong"}`))
			case bytes.Contains(buf, eventsMissed):
				p.tr.missed.Add(1)
			}
			continue
		}
		c.received.Add(1)
		lat, ok := p.tr.observe(key, now)
		if ok && p.record.Load() {
			c.mu.Lock()
			c.lats = append(c.lats, time.Duration(lat))
			c.mu.Unlock()
		}
	}
}

// readAll appends a whole message to buf, reusing its capacity.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// latencies returns (and clears) the recorded latencies of the connections
// for which include is true (nil: all).
func (p *pool) latencies(include func(*conn) bool) []time.Duration {
	p.mu.Lock()
	conns := append([]*conn(nil), p.conns...)
	p.mu.Unlock()
	var out []time.Duration
	for _, c := range conns {
		if include != nil && !include(c) {
			continue
		}
		c.mu.Lock()
		out = append(out, c.lats...)
		c.lats = c.lats[:0]
		c.mu.Unlock()
	}
	return out
}

// each calls fn for every connection.
func (p *pool) each(fn func(i int, c *conn)) {
	p.mu.Lock()
	conns := append([]*conn(nil), p.conns...)
	p.mu.Unlock()
	for i, c := range conns {
		fn(i, c)
	}
}

// pause stops reading c: frames pile up in its socket, then in the server.
func (c *conn) pause() { c.paused.Store(true) }

// unpause lets c read again (it reads what piled up, then learns whether the
// server closed it).
func (c *conn) unpause() {
	if c.paused.CompareAndSwap(true, false) {
		close(c.resume)
	}
}

// close closes every connection and waits for the readers.
func (p *pool) close() {
	p.closed.Do(func() {
		close(p.closing)
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.ws.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
}
