package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/olahol/melody"
	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/session"
)

// Options bound and tune the connections (config's names in brackets).
type Options struct {
	SendBuffer     int   // frames in melody's queue (send_buffer)
	SendQueueBytes int   // bytes waiting before a slow consumer is cut (send_queue_bytes)
	MaxFrameSize   int64 // a frame's size (max_frame_size); melody closes at 4×
	PingPeriod     time.Duration
	PongWait       time.Duration
	WriteWait      time.Duration
	AllowedOrigins []string
	RateLimit      float64 // frames per second (rate_limit)
	RateBurst      int
	MaxInFlight    int // items requests in flight per connection (max_in_flight)
	MaxConnections int
}

// Hub owns the WebSocket connections of the process: melody, the upgrade
// (token check, limits), the open connections and their counters.
type Hub struct {
	opts     Options
	log      zerolog.Logger
	sessions *session.Deps
	melody   *melody.Melody

	conns    atomic.Int64
	closing  atomic.Bool
	clientMu sync.Mutex
	clients  map[*Conn]struct{}
	evicted  atomic.Int64
	stats    stats
}

// New makes the hub; sessions are the collaborators of every connection's
// session (its Auth also checks tokens at the upgrade).
func New(opts Options, sessions *session.Deps, log zerolog.Logger) *Hub {
	h := &Hub{opts: opts, log: log, sessions: sessions, clients: map[*Conn]struct{}{}}
	h.melody = h.newMelody()
	return h
}

// Evicted counts the clients disconnected as slow consumers.
func (h *Hub) Evicted() int64 { return h.evicted.Load() }

// Endpoint is a protocol served at a path: it makes what an upgrade
// request opens (protocol/extension, protocol/realtime).
type Endpoint interface {
	Open(r *http.Request) Open
}

// Open is what a protocol's endpoint makes of an upgrade request: the token
// it carries, the reason to refuse it without one ("" = the public role),
// and the codec of the new connection.
type Open struct {
	Token           string
	RefuseAnonymous string
	Codec           Codec
}

// Refusal is an upgrade answered without a WebSocket: the HTTP status and
// error body, and when to ask the client to retry (a Retry-After value, ""
// for none).
type Refusal struct {
	Err        *session.Error
	RetryAfter string
}

var errShuttingDown = &session.Error{Status: 503, Code: "SHUTTING_DOWN", Message: "broker is shutting down"}

// newMelody configures melody for the broker; its defaults (512-byte
// frames, every origin, silent drops) do not suit it.
func (h *Hub) newMelody() *melody.Melody {
	m := melody.New()
	m.Config.MaxMessageSize = 4 * h.opts.MaxFrameSize // beyond: close 1009; between: an ERROR frame
	m.Config.MessageBufferSize = h.opts.SendBuffer
	m.Config.PingPeriod = h.opts.PingPeriod
	m.Config.PongWait = h.opts.PongWait
	m.Config.WriteWait = h.opts.WriteWait
	m.Upgrader.CheckOrigin = func(r *http.Request) bool { return CheckOrigin(h.opts.AllowedOrigins, r) }
	// Idle connections dominate memory: a small read buffer, and write
	// buffers borrowed from a pool only while a frame is being written.
	// The GraphQL endpoint's protocol (graphql-ws clients require the
	// server to choose it); other clients offer none.
	m.Upgrader.Subprotocols = []string{"graphql-transport-ws"}
	m.Upgrader.ReadBufferSize = 512 // its own: net/http's 4 KiB reader is freed
	m.Upgrader.WriteBufferSize = 4096
	m.Upgrader.WriteBufferPool = &sync.Pool{}
	m.HandleMessage(func(ms *melody.Session, msg []byte) { connOf(ms).receive(msg) })
	m.HandleSentMessage(func(ms *melody.Session, msg []byte) { connOf(ms).sent(msg) })
	m.HandleConnect(func(ms *melody.Session) {
		c := connOf(ms)
		c.ws = melodyConn{ms}
		// Nothing reads the request after the handshake; its headers
		// would stay in memory for the life of the connection.
		ms.Request = nil
		// A handshake that was still running when shutdown closed the
		// clients must not outlive it: it closes itself.
		h.clientMu.Lock()
		closing := h.closing.Load()
		if !closing {
			h.clients[c] = struct{}{}
		}
		h.clientMu.Unlock()
		h.stats.protocol(c.codec.Name()).Add(1)
		c.codec.Opened(c)
		c.handshakeDone()
		if closing {
			c.evict(websocket.CloseGoingAway, "going away")
		}
	})
	m.HandleDisconnect(func(ms *melody.Session) {
		c := connOf(ms)
		c.sess.Close()
		c.dropQueued()
		h.stats.protocol(c.codec.Name()).Add(-1)
		h.clientMu.Lock()
		delete(h.clients, c)
		h.clientMu.Unlock()
		h.conns.Add(-1)
		c.log.Debug().Msg("disconnected")
	})
	m.HandleError(func(ms *melody.Session, err error) {
		c := connOf(ms)
		if errors.Is(err, melody.ErrMessageBufferFull) {
			// Cannot happen while every frame goes through client.Send,
			// which never overfills melody's queue; evict rather than lose
			// a frame silently if it ever does.
			h.evicted.Add(1)
			c.evict(CloseSlowConsumer, "slow consumer: send buffer full")
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// No pong within pong_wait: a client that stopped reading. With
			// the kernel's socket buffers (megabytes on a fast link) in
			// front of send_queue_bytes, a stalled client whose events are
			// small is usually found here, not as a slow consumer.
			add(&h.stats.evictions, "pong_timeout")
			c.log.Debug().Msg("no pong within pong_wait: connection closed")
			return
		}
		c.log.Debug().Err(err).Msg("connection error")
	})
	return m
}

func connOf(ms *melody.Session) *Conn {
	v, _ := ms.Get("conn")
	return v.(*Conn)
}

// Accept authenticates the token of open (when not empty) and upgrades the
// request to a connection speaking its codec; addr is the client's address
// (behind trusted proxies, the one they name). A nil answer means the
// request was answered (upgraded, or refused by the WebSocket handshake
// itself, as 403 for an origin not allowed); otherwise the caller answers
// the refusal. Without a token it refuses with open.RefuseAnonymous, unless
// that is empty.
func (h *Hub) Accept(w http.ResponseWriter, r *http.Request, addr string, open Open) *Refusal {
	if h.closing.Load() {
		return &Refusal{Err: errShuttingDown}
	}
	if h.conns.Add(1) > int64(h.opts.MaxConnections) {
		h.conns.Add(-1)
		return &Refusal{Err: &session.Error{Status: 503, Code: "TOO_MANY_CONNECTIONS", Message: "connection limit reached"}}
	}
	upgraded := false
	defer func() {
		if !upgraded {
			h.conns.Add(-1)
		}
	}()
	token := open.Token
	log := h.log.With().Str("remote", r.RemoteAddr).Bool("public", token == "").Logger()
	var id directus.Identity
	if token == "" {
		if open.RefuseAnonymous != "" {
			return &Refusal{Err: &session.Error{Status: 401, Code: "UNAUTHORIZED", Message: open.RefuseAnonymous}}
		}
	} else {
		var err error
		id, err = h.sessions.Auth.Validate(directus.ClientCaused(broker.WithClientAddr(r.Context(), addr)), token)
		if err != nil {
			ae := session.AsError(err)
			if ae.Status == http.StatusServiceUnavailable {
				if ae.Code != directus.ErrBusy.Code {
					log.Warn().Err(err).Msg("upgrade refused: Directus unreachable")
				}
				retry := "1"
				var be *directus.BusyError
				if errors.As(err, &be) {
					retry = be.RetryAfterSeconds() // its turn, kept for its token
				}
				return &Refusal{Err: ae, RetryAfter: retry}
			}
			return &Refusal{Err: &session.Error{Status: 401, Code: "INVALID_CREDENTIALS", Message: "Directus refused the token"}}
		}
		log = log.With().Str("user", id.UserID).Logger()
	}
	if h.closing.Load() {
		return &Refusal{Err: errShuttingDown} // shutdown began while the token was checked
	}
	if !websocketRequest(r) {
		return &Refusal{Err: session.Invalid("expected a WebSocket upgrade request")}
	}
	cl := newConn(h, open.Codec, log)
	sess, err := session.New(h.sessions, open.Codec, cl, session.Peer{Token: token, ID: id, Addr: addr}, log)
	if err != nil {
		return &Refusal{Err: session.AsError(err)}
	}
	cl.sess = sess
	upgraded = true
	// The connection lives on a goroutine of its own that starts with a
	// small stack. The request's goroutine, whose stack grew through the
	// middleware and the token check, and net/http's per-request buffers
	// are freed once the handshake is done: that halves the memory of an
	// idle connection. The request waits for the handshake (echo recycles
	// its context once the handler returns), so w must be net/http's own
	// writer, not echo's recycled wrapper.
	handshake := make(chan struct{})
	cl.handshakeDone = sync.OnceFunc(func() { close(handshake) })
	go func() {
		if err := h.melody.HandleRequestWithKeys(w, r, map[string]any{"conn": cl}); err != nil {
			// The upgrader already answered the request (403 for a bad
			// origin). The connect and disconnect handlers never ran.
			log.Debug().Err(err).Msg("upgrade failed")
			cl.sess.Close()
			h.conns.Add(-1)
		}
		cl.handshakeDone()
	}()
	<-handshake
	return nil
}

// Close refuses new connections from now on: upgrades answer 503, and a
// handshake still running closes itself (1001) once open.
func (h *Hub) Close() { h.closing.Store(true) }

// CloseAll closes every connection with code after the frames queued for
// it, waits (bounded by ctx) until their handlers have finished, and then
// cuts those whose clients did not take their frames in time.
func (h *Hub) CloseAll(ctx context.Context, code int) {
	h.clientMu.Lock()
	clients := make([]*Conn, 0, len(h.clients))
	for c := range h.clients {
		clients = append(clients, c)
	}
	h.clientMu.Unlock()
	for _, c := range clients {
		c.Close(code, "going away")
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for h.conns.Load() > 0 {
		select {
		case <-ctx.Done():
			for _, c := range clients {
				c.evict(code, "going away")
			}
			return
		case <-t.C:
		}
	}
}

func websocketRequest(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}
