package handlers

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/protocol/extension"
	"github.com/directus-ws-broker/directus-ws-broker/protocol/graphql"
	"github.com/directus-ws-broker/directus-ws-broker/protocol/realtime"
	"github.com/directus-ws-broker/directus-ws-broker/session"
	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// Deps are the server's collaborators, built by the broker's assembly
// (internal/app).
type Deps struct {
	Config   config.Config
	Broker   *broker.Broker
	Directus *directus.Client
	// Sessions are the collaborators of every connection's session; its
	// Auth also checks tokens at the upgrade.
	Sessions *session.Deps
	Log      zerolog.Logger
	// Example is the file system served at /example/ (nil: not served).
	Example fs.FS
	// Metrics serves /metrics (on admin_addr when set).
	Metrics http.Handler
	// GraphQLSchemas gives a GraphQL subscriber's schema (needed when
	// graphql_enabled).
	GraphQLSchemas graphql.SchemaSource
}

// Server is the HTTP edge: webhook, WebSocket endpoints, health, metrics.
type Server struct {
	cfg      config.Config
	log      zerolog.Logger
	broker   *broker.Broker
	directus *directus.Client
	auth     session.Authenticator
	sessions *session.Deps
	echo     *echo.Echo
	hub      *transport.Hub
	metrics  http.Handler
	// adminAddr is where the admin listener listens, once it does.
	adminAddr atomic.Pointer[string]

	closing atomic.Bool
	// webhookAnswers counts the webhook's answers by HTTP status.
	webhookAnswers sync.Map // status → *atomic.Int64
	// hooks counts the webhook calls in flight; hookMu orders their start
	// against closing (a call either sees closing or is waited for).
	hookMu sync.RWMutex
	hooks  sync.WaitGroup
	// shutdown is closed when a shutdown begins.
	shutdown     chan struct{}
	shutdownOnce sync.Once
	// listener is what Serve serves on (nil before).
	listener *listener
}

// New builds the server; it does no I/O.
func New(d Deps) *Server {
	s := &Server{
		cfg: d.Config, log: d.Log.With().Str("component", "http").Logger(),
		broker: d.Broker, directus: d.Directus,
		auth: d.Sessions.Auth, sessions: d.Sessions, metrics: d.Metrics,
		shutdown: make(chan struct{}),
	}
	s.hub = transport.New(hubOptions(s.cfg), d.Sessions, s.log)
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = ipExtractor(s.cfg.TrustedProxies)
	e.HTTPErrorHandler = s.httpError
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		// The path only: a query may hold an access_token.
		LogURIPath: true, LogStatus: true, LogMethod: true, LogLatency: true, HandleError: true,
		LogValuesFunc: func(_ echo.Context, v middleware.RequestLoggerValues) error {
			s.log.Debug().Str("method", v.Method).Str("path", v.URIPath).Int("status", v.Status).Dur("latency", v.Latency).Msg("request")
			return nil
		},
	}))
	e.Use(middleware.Recover())
	e.POST(s.cfg.WebhookPath, s.webhook, s.countWebhook)
	if s.cfg.WebsocketEnabled {
		e.GET(s.cfg.WebsocketPath, s.serveProtocol(extension.Endpoint{Options: extensionOptions(s.cfg)}))
	} else {
		s.log.Info().Str("path", s.cfg.WebsocketPath).Msg("websocket_enabled is false: no WebSocket endpoint (404 there)")
	}
	if s.cfg.RealtimeEnabled {
		e.GET(s.cfg.RealtimePath, s.serveProtocol(realtime.Endpoint{Options: realtimeOptions(s.cfg)}))
	}
	if s.cfg.GraphQLEnabled && d.GraphQLSchemas != nil {
		e.GET(s.cfg.GraphQLPath, s.serveProtocol(graphql.Endpoint{Options: graphqlOptions(s.cfg, d.GraphQLSchemas)}))
	}
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	if s.cfg.AdminAddr == "" && d.Metrics != nil {
		// No admin listener: the metrics are on the public port (block
		// them in the proxy; see the nginx recipe).
		e.GET("/metrics", echo.WrapHandler(d.Metrics))
	}
	if d.Example != nil && s.cfg.ExampleEnabled {
		e.GET("/example", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, "/example/") })
		e.GET("/example/*", echo.WrapHandler(http.StripPrefix("/example/", http.FileServer(http.FS(d.Example)))))
	}
	s.echo = e
	return s
}

// Evicted counts the clients disconnected as slow consumers.
func (s *Server) Evicted() int64 { return s.hub.Evicted() }

// ShuttingDown is closed once a shutdown has begun: from then on the
// webhook and upgrades answer 503 and /readyz reports it.
func (s *Server) ShuttingDown() <-chan struct{} { return s.shutdown }

// Handler is the server's HTTP handler (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.echo }

// Serve serves on ln until ctx is done, then shuts down gracefully: stop
// accepting, finish in-flight webhook calls, deliver what they published,
// and close every WebSocket with 1001 "going away".
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	l := newListener(ln)
	s.listener = l
	hs := &http.Server{
		Handler:   s.echo,
		ConnState: l.connState,
		// A slow or idle client cannot hold a connection (and a goroutine)
		// forever: headers within 10s, the whole request (a webhook body)
		// within 30s, idle keep-alive connections closed after 2 minutes.
		// WebSockets are hijacked before these matter; melody sets their
		// deadlines from pong_wait and write_wait.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          s.echo.StdLogger,
	}
	s.echo.StdLogger.SetOutput(zerologWriter{s.log})
	if s.cfg.AdminAddr != "" {
		stop, err := s.serveAdmin()
		if err != nil {
			return err
		}
		defer stop()
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info().Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	return s.Shutdown(sctx, hs)
}

// Shutdown performs the graceful shutdown on hs, within ctx:
//
//  1. New upgrades and webhook calls are answered 503 (the Flow logs the
//     failure: nothing is acknowledged that will not be delivered); the
//     webhook calls in flight finish (published: 202).
//  2. What was published is delivered, until a reserve before the
//     deadline.
//  3. Delivery stops, and each subscriber is told exactly which events it
//     will not get (EVENTS_MISSED with their ids), so it can resume
//     elsewhere with since.
//  4. Every client is closed with 1001 after the frames queued for it, and
//     then the listener, after the requests of the connections it had
//     accepted were read (and answered 503).
func (s *Server) Shutdown(ctx context.Context, hs *http.Server) error {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(s.cfg.ShutdownTimeout)
	}
	// A quarter of the time is kept for telling and closing the clients
	// (at 15 s, 3.75 s: thousands of notices listing a thousand ids each).
	reserve := time.Until(deadline) / 4
	s.hookMu.Lock()
	s.closing.Store(true)
	s.hookMu.Unlock()
	s.hub.Close()
	s.shutdownOnce.Do(func() { close(s.shutdown) })
	webhooks := make(chan struct{})
	go func() { s.hooks.Wait(); close(webhooks) }()
	select {
	case <-webhooks:
	case <-ctx.Done():
	}
	// A reread of the permission model would hold the events behind its
	// access change until it ends: they are delivered now, read per user.
	s.broker.EndAccessChanges()
	dctx, cancel := context.WithDeadline(ctx, deadline.Add(-reserve))
	derr := s.broker.Drain(dctx)
	cancel()
	if derr != nil {
		told, missed := s.broker.Stop(ctx)
		s.log.Warn().Err(derr).Int("subscriptions", told).Int("subscriber_events", missed).
			Msg("shutdown: not everything published could be delivered in shutdown_timeout; the subscribers were told which events they miss")
	} else {
		s.broker.Stop(ctx) // nothing left: stops further deliveries only
	}
	s.hub.CloseAll(ctx, websocket.CloseGoingAway)
	return stopServing(ctx, hs, s.listener)
}

func (s *Server) readyz(c echo.Context) error {
	code, body := s.readiness(c.Request().Context())
	return c.JSON(code, body)
}

// httpError answers errors echo itself raises (404, 405...), unwrapping a
// wrapped *echo.HTTPError, which echo's default handler does not.
func (s *Server) httpError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg := http.StatusText(he.Code)
		if m, ok := he.Message.(string); ok {
			msg = m
		}
		_ = c.JSON(he.Code, errorBody(&session.Error{Status: he.Code, Code: codeFor(he.Code), Message: msg}))
		return
	}
	s.log.Error().Err(err).Str("path", c.Request().URL.Path).Msg("request failed")
	_ = c.JSON(http.StatusInternalServerError, errorBody(session.AsError(err)))
}

func codeFor(status int) string {
	switch status {
	case http.StatusNotFound:
		return "ROUTE_NOT_FOUND"
	case http.StatusMethodNotAllowed:
		return "METHOD_NOT_ALLOWED"
	}
	return "ERROR"
}

// zerologWriter routes net/http's error log into zerolog.
type zerologWriter struct{ log zerolog.Logger }

func (w zerologWriter) Write(p []byte) (int, error) {
	w.log.Warn().Str("source", "net/http").Msg(string(p))
	return len(p), nil
}
