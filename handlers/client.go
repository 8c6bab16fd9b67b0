package handlers

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Close codes the broker uses besides the standard ones.
const (
	closeSlowConsumer = 4008 // the client did not read fast enough
	closeTokenExpired = 4001 // the token expired and no new one came in time
)

// protocol is what differs between the WebSocket protocols the broker
// speaks: the extension's (websocket_path) and Directus's own realtime
// protocol (realtime_path). Everything else about a connection (token,
// subscriptions, limits, expiry, eviction) is the client's.
type protocol interface {
	// connected runs once the WebSocket is open, before any frame is read.
	connected(c *client)
	// handleMessage handles one client frame; it runs on the read loop.
	handleMessage(c *client, msg []byte)
	// tokenExpiredFrame tells the client its token expired.
	tokenExpiredFrame() []byte
	// authGrace is how long an expired client has to send a new token.
	authGrace(c *client) time.Duration
	// graceOver runs when that time passed without a new token.
	graceOver(c *client)
}

// client is one WebSocket connection: its token, its subscriptions and its
// limits. It is the broker.Sink of its subscriptions.
type client struct {
	srv     *Server
	proto   protocol
	session *melody.Session
	log     zerolog.Logger
	limiter *rate.Limiter
	// inflight bounds the Directus requests running for this client.
	inflight chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc

	// handshakeDone releases the upgrade request once the connection is
	// established (or failed).
	handshakeDone func()
	// expires is the token's expiry at the upgrade (zero: none).
	expires time.Time
	token   atomic.Pointer[string]
	evicted atomic.Bool

	// Outgoing frames: queued counts those handed to melody and not yet
	// written; overflow holds the rest (see Send).
	sendMu        sync.Mutex
	queued        int
	overflow      [][]byte
	overflowBytes int

	// inbox holds received frames until a short-lived goroutine handles
	// them in order (see receive).
	inboxMu    sync.Mutex
	inbox      [][]byte
	inboxBytes int
	draining   bool

	mu      sync.Mutex
	subs    map[string]*broker.Subscription // by uid, or by collection without uid
	expiry  *time.Timer
	grace   *time.Timer
	expired bool
}

func newClient(srv *Server, proto protocol, token string, log zerolog.Logger) *client {
	ctx, cancel := context.WithCancel(context.Background())
	c := &client{
		srv: srv, proto: proto, log: log, ctx: ctx, cancel: cancel,
		limiter:  rate.NewLimiter(rate.Limit(srv.cfg.RateLimit), srv.cfg.RateBurst),
		inflight: make(chan struct{}, srv.cfg.MaxInFlight),
		subs:     map[string]*broker.Subscription{},
	}
	c.token.Store(&token)
	return c
}

// Token is the Directus token of the connection ("" for the public role).
func (c *client) Token() string { return *c.token.Load() }

// Send implements broker.Sink. It never blocks: melody queues the frame,
// and a full queue evicts the client (see Server.onError).
//
// Frames go to melody's fixed queue of send_buffer frames while it has room
// (melody would drop a frame silently when it is full), then wait in an
// overflow that costs memory only while it is used. A client whose overflow
// exceeds send_queue_bytes is a slow consumer and is disconnected: a burst
// (an import posting hundreds of events) does not evict clients that keep
// reading, and idle connections keep a small melody queue.
func (c *client) Send(frame []byte) {
	if c.evicted.Load() {
		return
	}
	c.sendMu.Lock()
	if c.queued < c.srv.cfg.SendBuffer && len(c.overflow) == 0 {
		c.queued++
		c.sendMu.Unlock()
		_ = c.session.Write(frame)
		return
	}
	if c.overflowBytes+len(frame) > c.srv.cfg.SendQueueBytes {
		c.overflow, c.overflowBytes = nil, 0
		c.sendMu.Unlock()
		c.srv.evicted.Add(1)
		c.evict(closeSlowConsumer, "slow consumer: send queue full")
		return
	}
	c.overflow = append(c.overflow, frame)
	c.overflowBytes += len(frame)
	c.sendMu.Unlock()
}

// sent is melody's report that one frame left its queue and was written:
// the next overflowing frame, if any, takes its place.
func (c *client) sent() {
	c.sendMu.Lock()
	c.queued--
	if len(c.overflow) == 0 {
		c.sendMu.Unlock()
		return
	}
	next := c.overflow[0]
	c.overflow[0] = nil
	c.overflow = c.overflow[1:]
	if len(c.overflow) == 0 {
		c.overflow = nil
	}
	c.overflowBytes -= len(next)
	c.queued++
	c.sendMu.Unlock()
	_ = c.session.Write(next) // runs on melody's writer, which just freed a slot
}

// TokenExpired implements broker.Sink.
// A refusal of a token the connection has since replaced is old news.
func (c *client) TokenExpired(token string) {
	if token == c.Token() {
		c.expire()
	}
}

// evict closes a client that cannot keep up. The close frame is written
// directly on the connection because the queue it would go through is the
// one that is full; a goroutine keeps a stuck socket from stalling fan-out.
func (c *client) evict(code int, reason string) {
	if !c.evicted.CompareAndSwap(false, true) {
		return
	}
	level := zerolog.WarnLevel
	if code == websocket.CloseGoingAway {
		level = zerolog.DebugLevel
	}
	c.log.WithLevel(level).Int("code", code).Str("reason", reason).Msg("closing connection")
	conn := c.session.WebsocketConnection()
	go func() {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		_ = conn.Close()
	}()
}

// watchExpiry arms the timer that tells the client its JWT expired.
func (c *client) watchExpiry(expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if c.grace != nil {
		c.grace.Stop()
		c.grace = nil
	}
	c.expired = false
	if expires.IsZero() {
		return
	}
	c.expiry = time.AfterFunc(time.Until(expires), c.expire)
}

// expire tells the client its token no longer works and gives it the
// protocol's grace to send a new one.
func (c *client) expire() {
	c.mu.Lock()
	if c.expired || c.Token() == "" {
		c.mu.Unlock()
		return
	}
	c.expired = true
	c.grace = time.AfterFunc(c.proto.authGrace(c), c.graceOver)
	c.mu.Unlock()
	c.Send(c.proto.tokenExpiredFrame())
}

func (c *client) graceOver() {
	c.mu.Lock()
	still := c.expired
	c.mu.Unlock()
	if still {
		c.proto.graceOver(c)
	}
}

// extensionProtocol is the protocol of the original Directus extension
// (messages.go, frames.go).
type extensionProtocol struct{}

func (extensionProtocol) connected(*client) {}

func (extensionProtocol) handleMessage(c *client, msg []byte) { c.handleMessage(msg) }

func (extensionProtocol) tokenExpiredFrame() []byte {
	return errorFrame(&apiError{Status: 401, Code: "TOKEN_EXPIRED",
		Message: "token expired: send {\"type\":\"auth\",\"access_token\":\"...\"} to continue"}, nil)
}

func (extensionProtocol) authGrace(c *client) time.Duration { return c.srv.cfg.AuthGrace }

// graceOver closes the connection, or continues it as the public role when
// public access is on.
func (extensionProtocol) graceOver(c *client) {
	if c.srv.cfg.WebsocketPublic {
		c.setToken("")
		c.Send(typedFrame("AUTH", map[string]any{"status": "public", "message": "token expired; continuing as the public role"}, nil))
		return
	}
	c.evict(closeTokenExpired, "token expired")
}

// setToken switches the connection and its subscriptions to token.
func (c *client) setToken(token string) {
	c.token.Store(&token)
	c.mu.Lock()
	subs := make([]*broker.Subscription, 0, len(c.subs))
	for _, s := range c.subs {
		subs = append(subs, s)
	}
	c.mu.Unlock()
	for _, s := range subs {
		c.srv.broker.Rebind(s, token)
	}
}

// subKey identifies a subscription within the connection: its uid, or its
// collection when it has none (the extension's one-per-collection form).
func subKey(uid json.RawMessage, collection string) string {
	if len(uid) > 0 {
		return "u:" + string(uid)
	}
	return "c:" + collection
}

// close detaches everything; called once when the connection ends.
func (c *client) close() {
	c.cancel()
	c.mu.Lock()
	subs := c.subs
	c.subs = map[string]*broker.Subscription{}
	if c.expiry != nil {
		c.expiry.Stop()
	}
	if c.grace != nil {
		c.grace.Stop()
	}
	c.mu.Unlock()
	for _, s := range subs {
		c.srv.broker.Unsubscribe(s)
	}
}

// checkRead proves with Directus that token may read collection with q: a
// read of nothing, so a forbidden collection or field fails here, at
// subscribe time.
func (c *client) checkRead(ctx context.Context, token, collection string, q broker.Query) error {
	probe := broker.Query{}
	for k, v := range q {
		probe[k] = v
	}
	probe["limit"] = 0
	_, err := c.srv.reader.ReadSnapshot(ctx, token, collection, probe)
	return err
}

// attach subscribes s through the broker and records it under key, unless
// the connection closed meanwhile. Subscribes run concurrently: a
// subscription attached under the same key in between is replaced, and one
// whose token the connection replaced in between is moved to the new token.
func (c *client) attach(ctx context.Context, key string, s *broker.Subscription, opts broker.AttachOptions) error {
	if err := c.srv.broker.Subscribe(ctx, s, opts); err != nil {
		return err
	}
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		c.srv.broker.Unsubscribe(s)
		return nil
	}
	old := c.subs[key]
	c.subs[key] = s
	c.mu.Unlock()
	if old != nil && old != s {
		c.srv.broker.Unsubscribe(old)
	}
	if token := c.Token(); s.Token() != token {
		c.srv.broker.Rebind(s, token)
	}
	return nil
}

// maxInbox bounds the frames waiting to be handled on one connection; a
// client that outruns even parsing is flooding and is disconnected.
const (
	maxInbox      = 256
	maxInboxBytes = 4 << 20
)

// receive queues a frame from the read loop. Frames are handled in order on
// a goroutine that exists only while there are frames: decoding JSON on the
// read loop would grow its stack, which melody keeps for the life of the
// connection (it doubles the memory of an idle connection).
func (c *client) receive(msg []byte) {
	c.inboxMu.Lock()
	if len(c.inbox) >= maxInbox || c.inboxBytes+len(msg) > maxInboxBytes {
		c.inboxMu.Unlock()
		c.evict(websocket.ClosePolicyViolation, "too many frames queued")
		return
	}
	c.inbox = append(c.inbox, msg)
	c.inboxBytes += len(msg)
	start := !c.draining
	c.draining = true
	c.inboxMu.Unlock()
	if start {
		go c.drain()
	}
}

func (c *client) drain() {
	for {
		c.inboxMu.Lock()
		if len(c.inbox) == 0 {
			c.inbox, c.inboxBytes, c.draining = nil, 0, false
			c.inboxMu.Unlock()
			return
		}
		msg := c.inbox[0]
		c.inbox[0] = nil
		c.inbox = c.inbox[1:]
		c.inboxBytes -= len(msg)
		c.inboxMu.Unlock()
		c.proto.handleMessage(c, msg)
	}
}
