package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker/redisbus"
	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/internal/app"
	"github.com/directus-ws-broker/directus-ws-broker/metrics"
)

func loadConfig(args []string, getenv func(string) string, name string) (config.Config, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", getenv("CONFIG_FILE"), "path of the YAML configuration file")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, nil, usageError{err}
	}
	cfg, warnings, err := config.Load(*path, getenv)
	if err != nil {
		return cfg, warnings, usageError{fmt.Errorf("invalid configuration:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))}
	}
	return cfg, warnings, nil
}

func checkConfig(args []string, getenv func(string) string, stdout io.Writer) error {
	_, warnings, err := loadConfig(args, getenv, "checkconfig")
	for _, w := range warnings {
		fmt.Fprintln(stdout, "warning:", w)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "configuration is valid")
	return nil
}

func newLogger(cfg config.Config, w io.Writer) zerolog.Logger {
	out := w
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			format = "console"
		}
	}
	if format == "console" {
		out = zerolog.ConsoleWriter{Out: w}
	}
	level, _ := zerolog.ParseLevel(strings.ToLower(cfg.LogLevel))
	return zerolog.New(out).Level(level).With().Timestamp().Logger()
}

// serve runs the broker until ctx is done. It prints the listening address
// on stdout ("listening on 127.0.0.1:PORT") so tests and scripts can start
// it on port 0.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, warnings, err := loadConfig(args, getenv, "serve")
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	for _, w := range warnings {
		log.Warn().Msg(w)
	}
	if cfg.Bus == "redis" {
		redisbus.RouteLogs(log)
	}
	bi := buildVersion()
	a, err := app.New(cfg, log, metrics.Build{Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
	}
	switch {
	case cfg.WebhookSecret == "" && cfg.WebhookInsecureLoopback:
		log.Warn().Msg("WEBHOOK_SECRET is not set and WEBHOOK_INSECURE_LOOPBACK is on: the webhook takes events without a secret from a Flow on this host (loopback, not proxied, not from a browser). Set a secret for any other setup.")
	case cfg.WebhookSecret == "":
		log.Error().Msg("WEBHOOK_SECRET is not set: the webhook refuses every event. Set a secret (and give the Flow the same: flow install --secret), or WEBHOOK_INSECURE_LOOPBACK=true for a Directus on this host.")
	}
	log.Info().Str("version", buildVersion().Version).Str("addr", ln.Addr().String()).Str("directus", cfg.DirectusURL).Str("bus", cfg.Bus).
		Bool("public", cfg.WebsocketPublic).Str("websocket_path", cfg.WebsocketPath).Str("webhook_path", cfg.WebhookPath).Msg("broker started")
	if cfg.PprofAddr != "" {
		if err := servePprof(ctx, cfg.PprofAddr, log); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "listening on %s\n", ln.Addr())
	return a.Run(ctx, ln)
}

// servePprof serves net/http/pprof on its own listener until ctx is done.
func servePprof(ctx context.Context, addr string, log zerolog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof_addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() { <-ctx.Done(); _ = srv.Close() }()
	log.Warn().Str("addr", ln.Addr().String()).Msg("profiler enabled (pprof_addr): keep it off public interfaces")
	return nil
}
