package handlers

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// readiness is what /readyz answers: 200 when Directus answers, the bus can
// publish and the broker keeps up (the oldest undispatched event is younger
// than ready_max_lag); 503 otherwise, so a load balancer sends new clients
// elsewhere.
func (s *Server) readiness(ctx context.Context) (int, map[string]string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	status := map[string]string{"directus": "ok", "bus": "ok", "dispatch": "ok"}
	code := http.StatusOK
	if s.closing.Load() {
		status["shutdown"], code = "in progress", http.StatusServiceUnavailable
	}
	if err := s.directus.Health(ctx); err != nil {
		status["directus"], code = "unreachable", http.StatusServiceUnavailable
	}
	if err := s.broker.Ready(ctx); err != nil {
		status["bus"], code = "unavailable", http.StatusServiceUnavailable
	}
	if lag := s.broker.Lag(); s.cfg.ReadyMaxLag > 0 && lag > s.cfg.ReadyMaxLag {
		status["dispatch"], code = fmt.Sprintf("degraded: %.1fs behind", lag.Seconds()), http.StatusServiceUnavailable
	}
	return code, status
}

// serveAdmin serves /metrics, /healthz, /readyz and Go's profiler on
// admin_addr: nothing operational on the public port. It returns a
// function that stops it.
func (s *Server) serveAdmin() (stop func(), err error) {
	ln, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("admin_addr %s: %w", s.cfg.AdminAddr, err)
	}
	mux := http.NewServeMux()
	if s.metrics != nil {
		mux.Handle("/metrics", s.metrics)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		code, body := s.readiness(r.Context())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: s.echo.StdLogger}
	addr := ln.Addr().String()
	s.adminAddr.Store(&addr)
	s.log.Info().Str("addr", addr).Msg("admin listener: /metrics, /healthz, /readyz, /debug/pprof (keep it off public interfaces)")
	go func() { _ = srv.Serve(ln) }()
	return func() { _ = srv.Close() }, nil
}

// AdminAddr is the admin listener's address ("" when there is none, or
// before Serve started it).
func (s *Server) AdminAddr() string {
	if a := s.adminAddr.Load(); a != nil {
		return *a
	}
	return ""
}
