// Package app assembles a broker from its configuration — the Directus
// client, the bus, the broker and the HTTP edge — so that main and the test
// harness build it the one same way.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/broker/redisbus"
	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/example"
	"github.com/directus-ws-broker/directus-ws-broker/handlers"
	"github.com/directus-ws-broker/directus-ws-broker/metrics"
	"github.com/directus-ws-broker/directus-ws-broker/protocol/graphql"
	"github.com/directus-ws-broker/directus-ws-broker/session"
)

// App is an assembled broker.
type App struct {
	Config config.Config
	Broker *broker.Broker
	Server *handlers.Server

	perms *directus.Permissions
	auth  *directus.Authenticator
	// cluster announces this instance's groups (BUS=redis, cluster_reads).
	cluster *redisbus.Cluster
	log     zerolog.Logger
}

// New assembles the broker described by cfg; it does no I/O.
func New(cfg config.Config, log zerolog.Logger, build metrics.Build) (*App, error) {
	client, err := directus.NewClient(cfg.DirectusURL, cfg.DirectusTimeout)
	if err != nil {
		return nil, err
	}
	m := metrics.New(build)
	client.Observe(m.DirectusRequest)
	client.Limit(cfg.DirectusConcurrency, cfg.DirectusQueue)
	bus, err := NewBus(cfg, log)
	if err != nil {
		return nil, err
	}
	// One reader (with the one primary-key cache) for deliveries, subscribe
	// checks, snapshots and items reads alike.
	reader := &directus.Reader{Client: client}
	auth := directus.NewAuthenticator(client, cfg.TokenCacheTTL, cfg.InvalidTokenTTL)
	auth.AdmitChecks(cfg.TokenCheckRate, cfg.TokenCheckWait)
	perms := directus.NewPermissions(client, cfg.DirectusServiceToken, auth, log)
	classes := perms.Classifier()
	opts := broker.Options{
		ReadConcurrency: cfg.ReadConcurrency, ReadTimeout: cfg.DirectusTimeout,
		MaxHeldBytes: cfg.SendQueueBytes, HeldBytes: cfg.HeldBytes, Classifier: classes, Access: perms.Watcher(), AccessRefresh: cfg.AccessRefresh,
		Observer: m,
	}
	// With several instances, one read per group for the whole cluster.
	var cluster *redisbus.Cluster
	if rb, ok := bus.(*redisbus.Bus); ok && cfg.ClusterReads {
		cluster = rb.NewCluster(redisbus.ClusterOptions{Timeout: cfg.ClusterReadTimeout, Log: &log})
		opts.Cluster = cluster
	}
	b := broker.New(bus, reader, opts, log)
	quota := session.Quota{
		QueriesPerConnection: cfg.MaxQueriesPerConnection, QueriesPerUser: cfg.MaxQueriesPerUser,
		QueryBytesPerConnection: cfg.MaxQueryBytes, ConnectionsPerUser: cfg.MaxConnectionsPerUser,
		AnonymousPerAddress: cfg.MaxAnonymousPerAddress,
	}
	sessions := &session.Deps{
		Broker: b, Reader: reader, REST: client, Auth: auth,
		Classes: classes, Access: classes, Coverage: perms.Coverage(), Shared: session.NewShared(cfg.CheckCacheTTL),
		Log:    log.With().Str("component", "session").Logger(),
		Limits: session.Limits{MaxSubscriptions: cfg.MaxSubscriptions, MaxResponseBytes: cfg.SendQueueBytes, Quota: quota},
		Usage:  session.NewUsage(quota), Failures: &session.Failures{},
	}
	// A GraphQL subscriber's schema is Directus's own for its token; a
	// permission change the model sees ends the cached ones.
	schemas := &graphql.Source{Client: client, Generation: perms.Generation, TTL: cfg.GraphQLSchemaTTL}
	srv := handlers.New(handlers.Deps{Config: cfg, Broker: b, Directus: client, Sessions: sessions, Log: log, Example: example.Files, Metrics: m.Handler(), GraphQLSchemas: schemas})
	m.Watch(metrics.Sources{Broker: b.Metrics, Lag: b.Lag, Edge: edgeMetrics(srv), Failures: failureMetrics(sessions.Failures),
		DirectusWaiting: client.Waiting, PerUser: classes.PerUser})
	return &App{Config: cfg, Broker: b, Server: srv, perms: perms, auth: auth, log: log, cluster: cluster}, nil
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
	if a.perms.Enabled() {
		lctx, cancel := context.WithTimeout(ctx, a.Config.DirectusTimeout)
		err := a.perms.Load(lctx)
		cancel()
		if err != nil {
			a.log.Warn().Err(err).Msg("directus_service_token: the permission model cannot be read yet (reads stay per user until it can; see docs/sharing.md)")
		} else {
			a.log.Info().Msg("sharing reads between subscribers with equal access (directus_service_token)")
		}
	} else {
		a.log.Info().Msg("no directus_service_token: every user's subscriptions are read apart (one read per user and event); set one to share reads between users with equal access")
	}
	if a.Config.DirectusSecret != "" {
		stop := a.proveSecret(ctx)
		defer stop()
	}
	if err := a.Broker.Start(); err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	defer a.Broker.Close()
	if a.cluster != nil {
		// Withdrawn as soon as the shutdown begins: the others read for
		// the groups at once, while this instance drains.
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); a.cluster.Run(cctx, a.Broker.ClusterKeys) }()
		defer func() { cancel(); <-done }()
		a.log.Info().Str("instance", a.cluster.ID()).Msg("cluster reads: one read per group and event across the instances on this Redis")
	}
	return a.Server.Serve(ctx, ln)
}

// proveSecret proves directus_secret before access JWTs are verified with
// it, and again every access_refresh (a minute when that is 0): a SECRET
// rotated in Directus stops the local checks within that interval.
func (a *App) proveSecret(ctx context.Context) (stop func()) {
	v := directus.NewJWTVerifier(a.Config.DirectusSecret)
	prove := func() {
		pctx, cancel := context.WithTimeout(ctx, a.Config.DirectusTimeout)
		defer cancel()
		was := a.auth.VerifiesLocally()
		err := a.auth.ProveSecret(pctx, v, a.Config.DirectusServiceToken)
		switch {
		case err == nil && !was:
			a.log.Info().Msg("directus_secret proven: access JWTs are verified here, as Directus verifies them")
		case errors.Is(err, directus.ErrSecretMismatch):
			a.log.Error().Err(err).Msg("directus_secret")
			if was {
				// Tokens let in with it may be refused by Directus now.
				a.Broker.RefreshAccess()
			}
		case err != nil:
			a.log.Warn().Err(err).Bool("verifying_locally", a.auth.VerifiesLocally()).Msg("directus_secret not proven now; trying again later")
		}
	}
	prove()
	every := a.Config.AccessRefresh
	if every <= 0 {
		every = time.Minute
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				prove()
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// edgeMetrics and failureMetrics hand the metrics the counters of the
// packages above them (metrics imports only the broker).
func edgeMetrics(srv *handlers.Server) func() metrics.Edge {
	return func() metrics.Edge {
		st := srv.Stats()
		return metrics.Edge{Connections: st.Connections, SendQueueBytes: st.SendQueueBytes, Evictions: st.Evictions, Webhook: st.Webhook, Panics: st.Panics}
	}
}

func failureMetrics(f *session.Failures) func() []metrics.Failure {
	return func() []metrics.Failure {
		var out []metrics.Failure
		for _, c := range f.Snapshot() {
			out = append(out, metrics.Failure{Op: c.Op, Code: c.Code, N: c.N})
		}
		return out
	}
}
