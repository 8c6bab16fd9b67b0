package transport

import (
	"bytes"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/directus-ws-broker/directus-ws-broker/session"
)

// Close codes the broker uses besides the standard ones.
const (
	CloseSlowConsumer = 4008 // the client did not read fast enough
	CloseTokenExpired = 4001 // the token expired and no new one came in time
)

// Codec is one WebSocket protocol: it parses frames into the session's
// operations and encodes their results. The extension protocol
// (protocol/extension, websocket_path) and Directus's own
// (protocol/realtime, realtime_path) are the two.
type Codec interface {
	session.Protocol
	// Name names the protocol in the metrics ("extension", "realtime").
	Name() string
	// Opened runs once the WebSocket is open, before any frame is handled.
	Opened(l Link)
	// Handle handles one frame. Frames are handled one at a time in
	// arrival order, off melody's read loop; a frame that changes the
	// connection's state completes before the next is handled.
	Handle(l Link, msg []byte)
}

// Link is what a codec sees of its connection (a *Conn; a fake in the
// codecs' unit tests).
type Link interface {
	session.Conn
	// Session is the connection's session (set before Opened).
	Session() *session.Session
	// Async runs fn (an items request, started in frame order) off the
	// frame goroutine, bounded by max_in_flight; false when the bound is
	// reached.
	Async(fn func()) bool
	// Limited reports whether a frame is over the connection's rate
	// (answer is sent at most once a second).
	Limited(answer func() []byte) bool
	// Log is the connection's logger.
	Log() *zerolog.Logger
}

// wsConn is what a conn needs of its WebSocket (melodyConn; a fake in the
// transport's unit tests).
type wsConn interface {
	// Write queues a text frame (melody's queue of send_buffer frames).
	Write(msg []byte) error
	// CloseWithMsg queues a close frame behind the queued frames.
	CloseWithMsg(msg []byte) error
	// Abort writes a close frame directly on the socket and closes it,
	// bypassing the queue.
	Abort(code int, reason string)
}

// melodyConn is a melody session as a wsConn.
type melodyConn struct{ *melody.Session }

// Abort implements wsConn. A goroutine keeps a stuck socket from stalling
// the caller (fan-out).
func (m melodyConn) Abort(code int, reason string) {
	wc := m.WebsocketConnection()
	go func() {
		_ = wc.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
		_ = wc.Close()
	}()
}

// Conn is the transport of one WebSocket connection: melody's session, the
// send queue bounded in bytes, the inbox of received frames, the frame rate
// limit and the bound on concurrent items requests. It is the session's
// session.Conn and the codec's Link.
type Conn struct {
	hub     *Hub
	codec   Codec
	ws      wsConn
	sess    *session.Session
	log     zerolog.Logger
	limiter *rate.Limiter
	// inflight bounds the items requests running for this connection.
	inflight chan struct{}

	// handshakeDone releases the upgrade request once the connection is
	// established (or failed).
	handshakeDone func()
	evicted       atomic.Bool
	// rateNoticed is when the client was last told it is rate limited
	// (unix ns).
	rateNoticed atomic.Int64

	// Outgoing frames: queued counts those handed to melody and not yet
	// written, queuedBytes their size; overflow holds the rest (see Send).
	// closing is a close to send once everything before it was written.
	sendMu        sync.Mutex
	queued        int
	queuedBytes   int
	overflow      [][]byte
	overflowBytes int
	closing       []byte
	closeSent     bool
	// gone is set once the connection ended: nothing is queued any more.
	gone bool

	// multi: frames may hold several, joined by FrameSeparator.
	multi bool

	// inbox holds received frames until a short-lived goroutine handles
	// them in order (see receive).
	inboxMu    sync.Mutex
	inbox      [][]byte
	inboxBytes int
	draining   bool
}

var _ Link = (*Conn)(nil)

// FrameSeparator separates the frames of one event for a MultiFrame codec:
// a NUL byte never occurs in JSON text (control characters in strings are
// escaped), so it cannot be part of a frame.
const FrameSeparator = 0

// MultiFrame is a codec whose encoders may make several frames of one
// event, joined by FrameSeparator (GraphQL sends one next per key).
type MultiFrame interface{ MultiFrame() bool }

func newConn(hub *Hub, codec Codec, log zerolog.Logger) *Conn {
	mf, _ := codec.(MultiFrame)
	return &Conn{
		hub: hub, codec: codec, log: log, multi: mf != nil && mf.MultiFrame(),
		limiter:  rate.NewLimiter(rate.Limit(hub.opts.RateLimit), hub.opts.RateBurst),
		inflight: make(chan struct{}, hub.opts.MaxInFlight),
	}
}

// Session implements Link.
func (c *Conn) Session() *session.Session { return c.sess }

// Log implements Link.
func (c *Conn) Log() *zerolog.Logger { return &c.log }

// Send implements session.Conn. It never blocks.
//
// Frames go to melody's fixed queue of send_buffer frames while it has room
// (melody would drop a frame silently when it is full), then wait in an
// overflow that costs memory only while it is used. When the bytes waiting
// (in both) exceed send_queue_bytes the client is a slow consumer and is
// disconnected: a burst does not evict a client that keeps reading, and a
// client that does not read cannot make the broker hold more than the bound.
// A single frame is let through when nothing else waits, so an event larger
// than the bound still reaches a client that reads.
func (c *Conn) Send(frame []byte) {
	if c.evicted.Load() {
		return
	}
	if c.multi {
		if i := bytes.IndexByte(frame, FrameSeparator); i >= 0 {
			// Several frames of one event (MultiFrame): each its own
			// WebSocket message, in order.
			c.Send(frame[:i])
			c.Send(frame[i+1:])
			return
		}
	}
	c.sendMu.Lock()
	if c.closing != nil || c.gone {
		c.sendMu.Unlock()
		return // closing: nothing after the close frame; gone: nobody reads
	}
	waiting := c.queuedBytes + c.overflowBytes
	if waiting > 0 && waiting+len(frame) > c.hub.opts.SendQueueBytes {
		c.hub.stats.queuedBytes.Add(-int64(c.overflowBytes))
		c.overflow, c.overflowBytes = nil, 0
		c.sendMu.Unlock()
		c.hub.evicted.Add(1)
		c.evict(CloseSlowConsumer, "slow consumer: send queue full")
		return
	}
	c.hub.stats.queuedBytes.Add(int64(len(frame)))
	if c.queued < c.hub.opts.SendBuffer && len(c.overflow) == 0 {
		c.queued++
		c.queuedBytes += len(frame)
		c.sendMu.Unlock()
		if c.ws.Write(frame) != nil {
			c.unqueue(frame) // the connection ended meanwhile
		}
		return
	}
	c.overflow = append(c.overflow, frame)
	c.overflowBytes += len(frame)
	c.sendMu.Unlock()
}

// sent is melody's report that frame left its queue and was written: the
// next overflowing frame (or the pending close) takes its place.
func (c *Conn) sent(frame []byte) {
	c.sendMu.Lock()
	if c.gone {
		// Written as the connection ended: dropQueued already took its
		// bytes off the gauge.
		c.sendMu.Unlock()
		return
	}
	c.queued--
	c.queuedBytes -= len(frame)
	c.hub.stats.queuedBytes.Add(-int64(len(frame)))
	if len(c.overflow) == 0 {
		c.flushCloseLocked()
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
	c.queuedBytes += len(next)
	c.sendMu.Unlock()
	if c.ws.Write(next) != nil { // runs on melody's writer, which just freed a slot
		c.unqueue(next)
	}
}

// unqueue takes back a frame melody refused (its session closed): it will
// never be reported sent.
func (c *Conn) unqueue(frame []byte) {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.gone {
		return // dropQueued already forgot it
	}
	c.queued--
	c.queuedBytes -= len(frame)
	c.hub.stats.queuedBytes.Add(-int64(len(frame)))
}

// dropQueued forgets the frames still waiting when the connection ended.
func (c *Conn) dropQueued() {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.hub.stats.queuedBytes.Add(-int64(c.queuedBytes + c.overflowBytes))
	c.queued, c.queuedBytes, c.overflow, c.overflowBytes = 0, 0, nil, 0
	c.gone = true
}

// Close implements session.Conn: the close frame follows every frame queued
// before it, through the same queue (so it never overtakes the error frame
// it explains, and a full queue delays it instead of evicting the client).
func (c *Conn) Close(code int, reason string) {
	if c.evicted.Load() {
		return
	}
	var msg []byte
	if code != 0 {
		msg = websocket.FormatCloseMessage(code, reason)
	} else {
		msg = []byte{} // no status code (the client sees 1005)
	}
	c.sendMu.Lock()
	if c.closing == nil {
		c.closing = msg
		c.log.Debug().Int("code", code).Str("reason", reason).Msg("closing connection")
	}
	c.flushCloseLocked()
	c.sendMu.Unlock()
}

// flushCloseLocked hands the pending close to melody once nothing waits in
// the overflow and melody's queue has room for it.
func (c *Conn) flushCloseLocked() {
	if c.closing == nil || c.closeSent || len(c.overflow) > 0 || c.queued >= c.hub.opts.SendBuffer {
		return
	}
	c.closeSent = true
	_ = c.ws.CloseWithMsg(c.closing)
}

// evict closes a client that cannot keep up (or at shutdown). The close
// frame is written directly on the connection because the queue it would go
// through is the one that is full.
func (c *Conn) evict(code int, reason string) {
	if !c.evicted.CompareAndSwap(false, true) {
		return
	}
	level := zerolog.WarnLevel
	if code == websocket.CloseGoingAway {
		level = zerolog.DebugLevel
	}
	c.log.WithLevel(level).Int("code", code).Str("reason", reason).Msg("closing connection")
	add(&c.hub.stats.evictions, evictionReason(code))
	c.ws.Abort(code, reason)
}

// maxInbox bounds the frames waiting to be handled on one connection; a
// client that outruns even the handling is flooding and is disconnected.
const (
	maxInbox      = 1024
	maxInboxBytes = 4 << 20
)

// receive queues a frame from the read loop. Frames are handled in order on
// a goroutine that exists only while there are frames: decoding JSON on the
// read loop would grow its stack, which melody keeps for the life of the
// connection (it doubles the memory of an idle connection).
func (c *Conn) receive(msg []byte) {
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

func (c *Conn) drain() {
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
		if !c.contain(func() { c.codec.Handle(c, msg) }) {
			return
		}
	}
}

// contain runs fn, containing a panic to this connection: it is logged with
// its stack, counted, and the connection is closed (1011); the process and
// every other connection go on. false means fn panicked.
func (c *Conn) contain(fn func()) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			ok = false
			c.hub.stats.panics.Add(1)
			c.log.Error().Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Msg("handling a frame panicked; closing the connection")
			c.evict(websocket.CloseInternalServerErr, "internal error")
		}
	}()
	fn()
	return true
}

// Async implements Link: it runs fn (an items request, already started in frame order) off the
// frame goroutine, bounded by max_in_flight; false when the bound is
// reached.
func (c *Conn) Async(fn func()) bool {
	select {
	case c.inflight <- struct{}{}:
	default:
		return false
	}
	go func() {
		defer func() { <-c.inflight }()
		c.contain(fn)
	}()
	return true
}

// Limited implements Link: it reports whether a frame is over the connection's rate; the
// answer to tell the client is sent at most once a second (answering every
// frame of a flood would be a flood of answers), the rest are dropped.
func (c *Conn) Limited(answer func() []byte) bool {
	if c.limiter.Allow() {
		return false
	}
	now := time.Now().UnixNano()
	if last := c.rateNoticed.Load(); now-last >= int64(time.Second) && c.rateNoticed.CompareAndSwap(last, now) {
		c.Send(answer())
	}
	return true
}
