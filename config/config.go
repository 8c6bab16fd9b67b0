// Package config holds the broker's one typed configuration: defaults in one
// place, loading from config.yaml and the environment (environment wins), and
// validation whose errors name the offending key.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Config is every setting of the broker. Keys are the lower-case form of the
// environment variable names the original Directus extension used, so
// WEBSOCKET_PUBLIC in the environment and websocket_public in config.yaml are
// the same setting.
type Config struct {
	ListenAddr  string `mapstructure:"listen_addr"`
	DirectusURL string `mapstructure:"directus_url"`
	// DirectusTimeout bounds every request the broker makes to Directus. It
	// stays well below PongWait so a slow Directus never looks like a dead
	// client.
	DirectusTimeout time.Duration `mapstructure:"directus_timeout"`
	// DirectusServiceToken is a static token of a user that may read the
	// permission model (roles, policies, access, permissions, relations,
	// users' roles). With it, subscribers whose reads Directus answers
	// alike share them (one read per access class instead of one per
	// user); without it, each user is read for apart. Never logged.
	DirectusServiceToken string `mapstructure:"directus_service_token"`
	// DirectusSecret is Directus's SECRET: with it the broker verifies
	// Directus access JWTs itself, as Directus does, instead of asking
	// Directus once per user (a reconnect storm then costs Directus
	// nothing). It lets whoever holds it mint tokens for any user: see
	// docs/operating.md. DirectusSecretFile names a file holding it
	// instead. Never logged.
	DirectusSecret     string `mapstructure:"directus_secret"`
	DirectusSecretFile string `mapstructure:"directus_secret_file"`
	// TokenCheckRate admits the token checks made with Directus (static
	// tokens, session JWTs; every token without directus_secret) at this
	// many per second, so a reconnect storm does not slow Directus down for
	// everyone (0: as they come). A check whose turn comes within
	// TokenCheckWait waits for it; a later one is answered 503 with
	// Retry-After at its turn, which is kept for its token.
	TokenCheckRate float64       `mapstructure:"token_check_rate"`
	TokenCheckWait time.Duration `mapstructure:"token_check_wait"`
	// AccessRefresh is how often the permission model is reread even
	// without events (the safety net under the Flow's events); 0 = never.
	AccessRefresh time.Duration `mapstructure:"access_refresh"`
	// CheckCacheTTL is how long a subscribe check that passed is shared
	// with other subscribers of the same class, collection and query.
	CheckCacheTTL time.Duration `mapstructure:"check_cache_ttl"`

	WebsocketEnabled bool   `mapstructure:"websocket_enabled"`
	WebsocketPublic  bool   `mapstructure:"websocket_public"`
	WebsocketPath    string `mapstructure:"websocket_path"`
	// Per-frame-type switches, as the extension had them.
	WebsocketCoreGet       bool `mapstructure:"websocket_core_get"`
	WebsocketCorePost      bool `mapstructure:"websocket_core_post"`
	WebsocketCorePatch     bool `mapstructure:"websocket_core_patch"`
	WebsocketCoreDelete    bool `mapstructure:"websocket_core_delete"`
	WebsocketCoreSubscribe bool `mapstructure:"websocket_core_subscribe"`

	// AllowedOrigins lists the Origin headers accepted at the upgrade; "*"
	// accepts any. Requests without an Origin (non-browser clients) are
	// always accepted: the Origin check protects browsers' ambient
	// credentials, and the broker uses explicit tokens only.
	AllowedOrigins []string `mapstructure:"allowed_origins"`

	WebhookPath   string `mapstructure:"webhook_path"`
	WebhookSecret string `mapstructure:"webhook_secret"`
	// WebhookSecretHeader is the header the Flow sends the secret in (flow
	// install configures the Flow with the same setting); Authorization:
	// Bearer <secret> is accepted too.
	WebhookSecretHeader string `mapstructure:"webhook_secret_header"`
	WebhookMaxBody      int64  `mapstructure:"webhook_max_body"`
	// WebhookInsecureLoopback lets the webhook take events without a
	// secret, from a Flow on this host only (loopback, not proxied, not
	// browser-shaped). Without a secret and without it, the webhook takes
	// nothing.
	WebhookInsecureLoopback bool `mapstructure:"webhook_insecure_loopback"`

	MaxConnections int `mapstructure:"max_connections"`
	// MaxConnectionsPerUser bounds the connections of one Directus user;
	// MaxAnonymousPerAddress those without a user (not authenticated yet,
	// or the public role) from one address. 0 = no bound.
	MaxConnectionsPerUser  int `mapstructure:"max_connections_per_user"`
	MaxAnonymousPerAddress int `mapstructure:"max_anonymous_per_address"`
	// TrustedProxies lists the addresses (IPs or CIDRs) of reverse proxies
	// whose X-Forwarded-For names the client; empty: the peer address is
	// the client.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
	// MaxSubscriptions bounds the subscriptions of one connection.
	MaxSubscriptions int `mapstructure:"max_subscriptions"`
	// Each distinct query is a Directus read per event: bounded per
	// connection and per user (0 = no bound), and the stored query text per
	// connection.
	MaxQueriesPerConnection int     `mapstructure:"max_queries_per_connection"`
	MaxQueriesPerUser       int     `mapstructure:"max_queries_per_user"`
	MaxQueryBytes           int     `mapstructure:"max_query_bytes"`
	MaxFrameSize            int64   `mapstructure:"max_frame_size"`
	RateLimit               float64 `mapstructure:"rate_limit"`
	RateBurst               int     `mapstructure:"rate_burst"`
	MaxInFlight             int     `mapstructure:"max_in_flight"`
	SendBuffer              int     `mapstructure:"send_buffer"`
	// SendQueueBytes bounds the frames waiting beyond melody's queue of
	// SendBuffer frames; past it the client is a slow consumer.
	SendQueueBytes int `mapstructure:"send_queue_bytes"`
	// HeldBytes bounds the live frames held back across every subscription
	// being set up (each also within SendQueueBytes): a reconnect storm of
	// slow snapshots cannot hold unbounded memory.
	HeldBytes     int           `mapstructure:"held_bytes"`
	PingPeriod    time.Duration `mapstructure:"ping_period"`
	PongWait      time.Duration `mapstructure:"pong_wait"`
	WriteWait     time.Duration `mapstructure:"write_wait"`
	AuthGrace     time.Duration `mapstructure:"auth_grace"`
	TokenCacheTTL time.Duration `mapstructure:"token_cache_ttl"`
	// InvalidTokenTTL is how long a token Directus refused is refused again
	// without asking (0 = always ask).
	InvalidTokenTTL time.Duration `mapstructure:"invalid_token_ttl"`
	ReadConcurrency int           `mapstructure:"read_concurrency"`
	// DirectusConcurrency bounds the requests clients make the broker send
	// to Directus (token checks, subscribe checks, snapshots, items) in
	// flight; up to DirectusQueue more wait, and beyond those a client is
	// told to retry (503 SERVICE_BUSY). Event reads are bounded by
	// read_concurrency and never shed.
	DirectusConcurrency int           `mapstructure:"directus_concurrency"`
	DirectusQueue       int           `mapstructure:"directus_queue"`
	ShutdownTimeout     time.Duration `mapstructure:"shutdown_timeout"`

	Bus      string `mapstructure:"bus"`
	RedisURL string `mapstructure:"redis_url"`
	// RedisPrefix starts every Redis key and channel of this deployment, so
	// several deployments can share one Redis database.
	RedisPrefix string `mapstructure:"redis_prefix"`
	// ClusterReads (BUS=redis): the instances holding members of one group
	// (collection, access class, query) make one read per event between
	// them, the others deliver its result; ClusterReadTimeout is how long
	// they wait for it (after the reader's last heartbeat) before reading
	// themselves.
	ClusterReads       bool          `mapstructure:"cluster_reads"`
	ClusterReadTimeout time.Duration `mapstructure:"cluster_read_timeout"`
	HistorySize        int           `mapstructure:"history_size"`
	HistoryMaxAge      time.Duration `mapstructure:"history_max_age"`
	ExampleEnabled     bool          `mapstructure:"example_enabled"`
	// PprofAddr, when set, serves Go's profiler on its own listener (keep
	// it on loopback): never on the public address.
	PprofAddr string `mapstructure:"pprof_addr"`
	// AdminAddr, when set, serves /metrics, /healthz, /readyz and the
	// profiler on their own listener, and /metrics leaves the public port.
	AdminAddr string `mapstructure:"admin_addr"`
	// ReadyMaxLag makes /readyz answer 503 when the oldest undispatched
	// event is older (the broker falls behind); 0 = never.
	ReadyMaxLag     time.Duration `mapstructure:"ready_max_lag"`
	LogLevel        string        `mapstructure:"log_level"`
	LogFormat       string        `mapstructure:"log_format"`
	RealtimeEnabled bool          `mapstructure:"realtime_enabled"`
	RealtimePath    string        `mapstructure:"realtime_path"`
	// RealtimeAuthMode is public, handshake or strict, as Directus's
	// WEBSOCKETS_REST_AUTH.
	RealtimeAuthMode    string        `mapstructure:"realtime_auth_mode"`
	RealtimeAuthTimeout time.Duration `mapstructure:"realtime_auth_timeout"`
	// GraphQL subscriptions (graphql-transport-ws) at graphql_path, as
	// Directus's WEBSOCKETS_GRAPHQL_*. A subscriber's schema is the one
	// Directus prints for its token, reused for graphql_schema_ttl by the
	// tokens whose permissions are the same.
	GraphQLEnabled     bool          `mapstructure:"graphql_enabled"`
	GraphQLPath        string        `mapstructure:"graphql_path"`
	GraphQLAuthMode    string        `mapstructure:"graphql_auth_mode"`
	GraphQLAuthTimeout time.Duration `mapstructure:"graphql_auth_timeout"`
	GraphQLSchemaTTL   time.Duration `mapstructure:"graphql_schema_ttl"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		ListenAddr:              "127.0.0.1:8080",
		DirectusURL:             "http://127.0.0.1:8055",
		DirectusTimeout:         10 * time.Second,
		AccessRefresh:           time.Minute,
		CheckCacheTTL:           10 * time.Second,
		WebsocketEnabled:        true,
		WebsocketPublic:         false,
		WebsocketPath:           "/websocket",
		WebsocketCoreGet:        true,
		WebsocketCorePost:       true,
		WebsocketCorePatch:      true,
		WebsocketCoreDelete:     true,
		WebsocketCoreSubscribe:  true,
		AllowedOrigins:          []string{"*"},
		WebhookPath:             "/webhook",
		WebhookSecretHeader:     "X-Webhook-Secret",
		WebhookMaxBody:          1 << 20,
		MaxConnections:          20000,
		MaxConnectionsPerUser:   64,
		MaxAnonymousPerAddress:  64,
		TrustedProxies:          []string{},
		MaxSubscriptions:        256,
		MaxQueriesPerConnection: 32,
		MaxQueriesPerUser:       64,
		MaxQueryBytes:           256 << 10,
		MaxFrameSize:            64 << 10,
		RateLimit:               50,
		RateBurst:               100,
		MaxInFlight:             16,
		SendBuffer:              16,
		SendQueueBytes:          1 << 20,
		HeldBytes:               256 << 20,
		PingPeriod:              25 * time.Second,
		PongWait:                60 * time.Second,
		WriteWait:               10 * time.Second,
		AuthGrace:               30 * time.Second,
		TokenCacheTTL:           30 * time.Second,
		TokenCheckRate:          50,
		TokenCheckWait:          5 * time.Second,
		InvalidTokenTTL:         10 * time.Second,
		ReadConcurrency:         32,
		DirectusConcurrency:     32,
		DirectusQueue:           1000,
		ShutdownTimeout:         15 * time.Second,
		Bus:                     "memory",
		RedisURL:                "redis://127.0.0.1:6379/0",
		RedisPrefix:             "directus-ws-broker:",
		ClusterReads:            true,
		ClusterReadTimeout:      500 * time.Millisecond,
		HistorySize:             1000,
		HistoryMaxAge:           time.Hour,
		ExampleEnabled:          true,
		ReadyMaxLag:             10 * time.Second,
		LogLevel:                "info",
		LogFormat:               "auto",
		RealtimeEnabled:         true,
		RealtimePath:            "/realtime",
		RealtimeAuthMode:        "handshake",
		RealtimeAuthTimeout:     10 * time.Second,
		GraphQLEnabled:          true,
		GraphQLPath:             "/graphql",
		GraphQLAuthMode:         "handshake",
		GraphQLAuthTimeout:      10 * time.Second,
		GraphQLSchemaTTL:        time.Minute,
	}
}

// Validate reports every invalid setting, each error naming its key.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	if _, port, err := net.SplitHostPort(c.ListenAddr); err != nil || port == "" {
		bad("listen_addr", "must be host:port (port 0 picks a free port), got %q", c.ListenAddr)
	}
	if u, err := url.Parse(c.DirectusURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("directus_url", "must be an absolute http(s) URL, got %q", c.DirectusURL)
	}
	if c.DirectusTimeout <= 0 {
		bad("directus_timeout", "must be positive")
	}
	paths := map[string]string{"websocket_path": c.WebsocketPath, "webhook_path": c.WebhookPath, "realtime_path": c.RealtimePath, "graphql_path": c.GraphQLPath}
	for key, p := range paths {
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# ") {
			bad(key, "must be a path starting with /, got %q", p)
		}
	}
	if !httpguts.ValidHeaderFieldName(c.WebhookSecretHeader) {
		bad("webhook_secret_header", "must be an HTTP header name, got %q", c.WebhookSecretHeader)
	}
	if c.TokenCheckRate < 0 {
		bad("token_check_rate", "must be 0 (no pacing) or positive")
	}
	if c.TokenCheckWait < 0 {
		bad("token_check_wait", "must not be negative")
	}
	if c.DirectusSecret != "" && c.DirectusServiceToken == "" {
		bad("directus_secret", "needs directus_service_token: the broker proves with it that the secret is Directus's, and takes each user's policies from the model the service user reads")
	}
	if c.WebsocketPath == c.WebhookPath {
		bad("webhook_path", "must differ from websocket_path")
	}
	if c.RealtimeEnabled && (c.RealtimePath == c.WebsocketPath || c.RealtimePath == c.WebhookPath) {
		bad("realtime_path", "must differ from websocket_path and webhook_path")
	}
	positive := []struct {
		key string
		v   int64
	}{
		{"webhook_max_body", c.WebhookMaxBody}, {"max_connections", int64(c.MaxConnections)}, {"max_subscriptions", int64(c.MaxSubscriptions)},
		{"max_frame_size", c.MaxFrameSize}, {"rate_burst", int64(c.RateBurst)},
		{"max_in_flight", int64(c.MaxInFlight)}, {"send_buffer", int64(c.SendBuffer)}, {"send_queue_bytes", int64(c.SendQueueBytes)},
		{"held_bytes", int64(c.HeldBytes)},
		{"read_concurrency", int64(c.ReadConcurrency)}, {"history_size", int64(c.HistorySize)},
		{"directus_concurrency", int64(c.DirectusConcurrency)},
	}
	for _, p := range positive {
		if p.v <= 0 {
			bad(p.key, "must be positive, got %d", p.v)
		}
	}
	if c.RateLimit <= 0 {
		bad("rate_limit", "must be positive (frames per second), got %v", c.RateLimit)
	}
	for key, d := range map[string]time.Duration{"ping_period": c.PingPeriod, "pong_wait": c.PongWait, "write_wait": c.WriteWait, "auth_grace": c.AuthGrace, "shutdown_timeout": c.ShutdownTimeout, "history_max_age": c.HistoryMaxAge} {
		if d <= 0 {
			bad(key, "must be a positive duration")
		}
	}
	if c.TokenCacheTTL < 0 {
		bad("token_cache_ttl", "must not be negative")
	}
	if c.InvalidTokenTTL < 0 {
		bad("invalid_token_ttl", "must not be negative")
	}
	for key, v := range map[string]int{"max_connections_per_user": c.MaxConnectionsPerUser, "max_anonymous_per_address": c.MaxAnonymousPerAddress,
		"max_queries_per_connection": c.MaxQueriesPerConnection, "max_queries_per_user": c.MaxQueriesPerUser,
		"max_query_bytes": c.MaxQueryBytes, "directus_queue": c.DirectusQueue} {
		if v < 0 {
			bad(key, "must not be negative (0 = no bound), got %d", v)
		}
	}
	for _, p := range c.TrustedProxies {
		if _, err := ParseTrusted(p); err != nil {
			bad("trusted_proxies", "%q is neither an IP address nor a CIDR range", p)
		}
	}
	if c.AccessRefresh < 0 {
		bad("access_refresh", "must not be negative (0 turns the periodic reread off)")
	}
	if c.CheckCacheTTL < 0 {
		bad("check_cache_ttl", "must not be negative")
	}
	if c.PingPeriod >= c.PongWait {
		bad("ping_period", "must be shorter than pong_wait (%s)", c.PongWait)
	}
	if c.DirectusTimeout >= c.PongWait {
		bad("directus_timeout", "must be shorter than pong_wait (%s) so a slow Directus never stalls a socket past its heartbeat", c.PongWait)
	}
	switch c.Bus {
	case "memory":
	case "redis":
		if c.ClusterReadTimeout <= 0 {
			bad("cluster_read_timeout", "must be a positive duration")
		}
		if c.RedisPrefix == "" {
			bad("redis_prefix", "must not be empty")
		}
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			// The URL may carry a password: say what is wrong, never echo it.
			bad("redis_url", "must be a redis:// or rediss:// URL (redis://[user:password@]host:port/db)")
		}
	default:
		bad("bus", "must be memory or redis, got %q", c.Bus)
	}
	switch strings.ToLower(c.LogLevel) {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("log_level", "must be one of trace, debug, info, warn, error, got %q", c.LogLevel)
	}
	switch c.LogFormat {
	case "auto", "json", "console":
	default:
		bad("log_format", "must be auto, json or console, got %q", c.LogFormat)
	}
	for key, addr := range map[string]string{"pprof_addr": c.PprofAddr, "admin_addr": c.AdminAddr} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			bad(key, "must be host:port, got %q", addr)
		}
	}
	if c.ReadyMaxLag < 0 {
		bad("ready_max_lag", "must not be negative (0 turns the check off)")
	}
	switch c.RealtimeAuthMode {
	case "public", "handshake", "strict":
	default:
		bad("realtime_auth_mode", "must be public, handshake or strict, got %q", c.RealtimeAuthMode)
	}
	if c.RealtimeAuthTimeout <= 0 {
		bad("realtime_auth_timeout", "must be a positive duration")
	}
	switch c.GraphQLAuthMode {
	case "public", "handshake", "strict":
	default:
		bad("graphql_auth_mode", "must be public, handshake or strict, got %q", c.GraphQLAuthMode)
	}
	if c.GraphQLAuthTimeout <= 0 {
		bad("graphql_auth_timeout", "must be a positive duration")
	}
	if c.GraphQLSchemaTTL <= 0 {
		bad("graphql_schema_ttl", "must be a positive duration")
	}
	if c.GraphQLEnabled && (c.GraphQLPath == c.WebsocketPath || c.GraphQLPath == c.WebhookPath || c.GraphQLPath == c.RealtimePath) {
		bad("graphql_path", "must differ from websocket_path, webhook_path and realtime_path")
	}
	if len(c.AllowedOrigins) == 0 {
		bad("allowed_origins", "must list at least one origin (or \"*\")")
	}
	return errors.Join(errs...)
}

// ParseTrusted reads a trusted_proxies entry: an IP address or a CIDR range.
func ParseTrusted(s string) (*net.IPNet, error) {
	if ip := net.ParseIP(s); ip != nil {
		bits := 128
		if ip.To4() != nil {
			ip, bits = ip.To4(), 32
		}
		return &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}, nil
	}
	_, n, err := net.ParseCIDR(s)
	return n, err
}
