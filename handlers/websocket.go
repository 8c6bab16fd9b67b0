package handlers

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
	"github.com/olahol/melody"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/session"
)

// newMelody configures melody for the broker; its defaults (512-byte
// frames, every origin, silent drops) do not suit it.
func (s *Server) newMelody() *melody.Melody {
	m := melody.New()
	m.Config.MaxMessageSize = 4 * s.cfg.MaxFrameSize // beyond: close 1009; between: an ERROR frame
	m.Config.MessageBufferSize = s.cfg.SendBuffer
	m.Config.PingPeriod = s.cfg.PingPeriod
	m.Config.PongWait = s.cfg.PongWait
	m.Config.WriteWait = s.cfg.WriteWait
	m.Upgrader.CheckOrigin = s.checkOrigin
	// Idle connections dominate memory: a small read buffer, and write
	// buffers borrowed from a pool only while a frame is being written.
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
		s.clientMu.Lock()
		closing := s.closing.Load()
		if !closing {
			s.clients[c] = struct{}{}
		}
		s.clientMu.Unlock()
		s.protocolConns(c).Add(1)
		c.codec.opened(c)
		c.handshakeDone()
		if closing {
			c.evict(websocket.CloseGoingAway, "going away")
		}
	})
	m.HandleDisconnect(func(ms *melody.Session) {
		c := connOf(ms)
		c.sess.Close()
		c.dropQueued()
		s.protocolConns(c).Add(-1)
		s.clientMu.Lock()
		delete(s.clients, c)
		s.clientMu.Unlock()
		s.conns.Add(-1)
		c.log.Debug().Msg("disconnected")
	})
	m.HandleError(func(ms *melody.Session, err error) {
		c := connOf(ms)
		if errors.Is(err, melody.ErrMessageBufferFull) {
			// Cannot happen while every frame goes through client.Send,
			// which never overfills melody's queue; evict rather than lose
			// a frame silently if it ever does.
			s.evicted.Add(1)
			c.evict(closeSlowConsumer, "slow consumer: send buffer full")
			return
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// No pong within pong_wait: a client that stopped reading. With
			// the kernel's socket buffers (megabytes on a fast link) in
			// front of send_queue_bytes, a stalled client whose events are
			// small is usually found here, not as a slow consumer.
			add(&s.stats.evictions, "pong_timeout")
			c.log.Debug().Msg("no pong within pong_wait: connection closed")
			return
		}
		c.log.Debug().Err(err).Msg("connection error")
	})
	return m
}

func connOf(ms *melody.Session) *conn {
	v, _ := ms.Get("conn")
	return v.(*conn)
}

// upgrade authenticates the request before the WebSocket handshake: an
// invalid token is a 401 (never a silent downgrade to public), no token is
// the public role only when websocket_public is on, and an unreachable
// Directus is a 503.
func (s *Server) upgrade(c echo.Context) error {
	refuse := ""
	if !s.cfg.WebsocketPublic {
		refuse = "a token is required (websocket_public is off)"
	}
	return s.accept(c, requestToken(c.Request()), refuse, &seedCodec{})
}

// accept authenticates token (when not empty) and upgrades the request to a
// connection speaking codec. Without a token it answers 401 with the reason
// refuseAnonymous, unless that is empty.
func (s *Server) accept(c echo.Context, token, refuseAnonymous string, codec codec) error {
	r := c.Request()
	if s.closing.Load() {
		return c.JSON(http.StatusServiceUnavailable, errorBody(&session.Error{Status: 503, Code: "SHUTTING_DOWN", Message: "broker is shutting down"}))
	}
	if s.conns.Add(1) > int64(s.cfg.MaxConnections) {
		s.conns.Add(-1)
		return c.JSON(http.StatusServiceUnavailable, errorBody(&session.Error{Status: 503, Code: "TOO_MANY_CONNECTIONS", Message: "connection limit reached"}))
	}
	upgraded := false
	defer func() {
		if !upgraded {
			s.conns.Add(-1)
		}
	}()
	log := s.log.With().Str("remote", r.RemoteAddr).Bool("public", token == "").Logger()
	var id directus.Identity
	if token == "" {
		if refuseAnonymous != "" {
			return c.JSON(http.StatusUnauthorized, errorBody(&session.Error{Status: 401, Code: "UNAUTHORIZED", Message: refuseAnonymous}))
		}
	} else {
		var err error
		id, err = s.auth.Validate(directus.ClientCaused(broker.WithClientAddr(r.Context(), c.RealIP())), token)
		if err != nil {
			ae := session.AsError(err)
			if ae.Status == http.StatusServiceUnavailable {
				if ae.Code != directus.ErrBusy.Code {
					log.Warn().Err(err).Msg("upgrade refused: Directus unreachable")
				}
				c.Response().Header().Set("Retry-After", "1")
				return c.JSON(http.StatusServiceUnavailable, errorBody(ae))
			}
			return c.JSON(http.StatusUnauthorized, errorBody(&session.Error{Status: 401, Code: "INVALID_CREDENTIALS", Message: "Directus refused the token"}))
		}
		log = log.With().Str("user", id.UserID).Logger()
	}
	if s.closing.Load() {
		// Shutdown began while the token was being checked.
		return c.JSON(http.StatusServiceUnavailable, errorBody(&session.Error{Status: 503, Code: "SHUTTING_DOWN", Message: "broker is shutting down"}))
	}
	if !websocketRequest(r) {
		return c.JSON(http.StatusBadRequest, errorBody(session.Invalid("expected a WebSocket upgrade request")))
	}
	cl := newConn(s, codec, log)
	sess, err := session.New(s.sessions, codec, cl, session.Peer{Token: token, ID: id, Addr: c.RealIP()}, log)
	if err != nil {
		e := session.AsError(err)
		return c.JSON(e.Status, errorBody(e))
	}
	cl.sess = sess
	upgraded = true
	// The connection lives on a goroutine of its own that starts with a
	// small stack. The request's goroutine, whose stack grew through the
	// middleware and the token check, and net/http's per-request buffers
	// are freed once the handshake is done: that halves the memory of an
	// idle connection. The request waits for the handshake (echo recycles
	// its context once the handler returns), and net/http's own writer is
	// used, not echo's recycled wrapper.
	w := c.Response().Writer
	handshake := make(chan struct{})
	cl.handshakeDone = sync.OnceFunc(func() { close(handshake) })
	go func() {
		if err := s.melody.HandleRequestWithKeys(w, r, map[string]any{"conn": cl}); err != nil {
			// The upgrader already answered the request (403 for a bad
			// origin). The connect and disconnect handlers never ran.
			log.Debug().Err(err).Msg("upgrade failed")
			cl.sess.Close()
			s.conns.Add(-1)
		}
		cl.handshakeDone()
	}()
	<-handshake
	return nil
}

// requestToken takes the token from Authorization: Bearer, or the
// access_token or api_token query parameter.
func requestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	q := r.URL.Query()
	if t := q.Get("access_token"); t != "" {
		return t
	}
	return q.Get("api_token")
}

func websocketRequest(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// checkOrigin accepts requests without an Origin (non-browser clients) and
// browsers whose origin is allowed.
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	for _, allowed := range s.cfg.AllowedOrigins {
		if allowed == "*" || strings.EqualFold(allowed, origin) || strings.EqualFold(allowed, u.Host) {
			return true
		}
	}
	return false
}

// originListed reports whether the request's Origin is named in
// allowed_origins (a "*" entry does not count).
func (s *Server) originListed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return false
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	for _, allowed := range s.cfg.AllowedOrigins {
		if allowed != "*" && (strings.EqualFold(allowed, origin) || strings.EqualFold(allowed, u.Host)) {
			return true
		}
	}
	return false
}
