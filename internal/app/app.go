// Package app assembles a broker from its configuration — the Directus
// client, the bus, the broker and the HTTP edge — so that main and the test
// harness build it the one same way.
package app

import (
	"context"
	"fmt"
	"net"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/broker/redisbus"
	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/example"
	"github.com/directus-ws-broker/directus-ws-broker/handlers"
	"github.com/directus-ws-broker/directus-ws-broker/session"
)

// App is an assembled broker.
type App struct {
	Config config.Config
	Broker *broker.Broker
	Server *handlers.Server
}

// New assembles the broker described by cfg; it does no I/O.
func New(cfg config.Config, log zerolog.Logger) (*App, error) {
	client, err := directus.NewClient(cfg.DirectusURL, cfg.DirectusTimeout)
	if err != nil {
		return nil, err
	}
	bus, err := NewBus(cfg, log)
	if err != nil {
		return nil, err
	}
	// One reader (with the one primary-key cache) for deliveries, subscribe
	// checks, snapshots and items reads alike.
	reader := &directus.Reader{Client: client}
	classes := broker.TokenClasses{}
	b := broker.New(bus, reader, broker.Options{
		ReadConcurrency: cfg.ReadConcurrency, ReadTimeout: cfg.DirectusTimeout,
		MaxHeldBytes: cfg.SendQueueBytes, Classifier: classes,
	}, log)
	sessions := &session.Deps{
		Broker: b, Reader: reader, REST: client, Classes: classes,
		Auth:   directus.NewAuthenticator(client, cfg.TokenCacheTTL),
		Limits: session.Limits{MaxSubscriptions: cfg.MaxSubscriptions, MaxResponseBytes: cfg.SendQueueBytes},
	}
	srv := handlers.New(handlers.Deps{Config: cfg, Broker: b, Directus: client, Sessions: sessions, Log: log, Example: example.Files})
	return &App{Config: cfg, Broker: b, Server: srv}, nil
}

// NewBus makes the bus cfg.Bus names.
func NewBus(cfg config.Config, log zerolog.Logger) (broker.Bus, error) {
	if cfg.Bus != "redis" {
		return broker.NewMemoryBus(cfg.HistorySize, cfg.HistoryMaxAge), nil
	}
	return redisbus.New(redisbus.Options{
		URL: cfg.RedisURL, Prefix: cfg.RedisPrefix, HistorySize: cfg.HistorySize, HistoryMaxAge: cfg.HistoryMaxAge,
	}, log)
}

// Run starts the broker, serves on ln until ctx is done, shuts down
// gracefully and closes the broker.
func (a *App) Run(ctx context.Context, ln net.Listener) error {
	if err := a.Broker.Start(); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	defer a.Broker.Close()
	return a.Server.Serve(ctx, ln)
}
