package directus

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"
)

// Permissions is what the service user reads of Directus's permission
// model — the policies, the schema they reach, the users' roles and the
// fields rules depend on, which Flows send which collections — and the
// state built on it. Three views serve the broker, one per role:
// Classifier (which subscriptions read alike), Watcher (access changes and
// rereads) and Coverage (which collections a Flow sends).
type Permissions struct {
	client  *Client
	service string
	auth    *Authenticator
	log     zerolog.Logger

	model    atomic.Pointer[accessModel]
	coverage atomic.Pointer[coverage]
	covMu    sync.Mutex // one recheck of the Flows at a time (coverage.go)
	users    *roleLoader
	// gen counts rereads: what was proven under an older one (a cached
	// subscribe check) is not trusted.
	gen atomic.Uint64
	// preloaded is set when the last Load read every user's role.
	preloaded atomic.Bool
	// failClosed counts classes made per user, by reason.
	failClosed reasonCounts
	// owners are the owner classes (class + "\x00" + collection →
	// ownerSpec) and lookups their shared owner lookups (owners.go).
	owners     sync.Map
	ownerCount atomic.Int64 // entries of owners (bounded: maxOwnerClasses)
	lookups    ownerLookups
}

// Fingerprint identifies the model read (its rows' hash; "" without a
// model): broker instances share a group's reads only while theirs are
// equal (broker.Fingerprinter).
func (c *Permissions) Fingerprint() string {
	if m := c.model.Load(); m != nil {
		return m.fingerprint
	}
	return ""
}

// Generation counts the rereads of what decides access.
func (c *Permissions) Generation() uint64 { return c.gen.Load() }

// NewPermissions makes the permission state; service is the service token
// ("" = none: one class per user). It does no I/O: Load reads the model.
func NewPermissions(client *Client, service string, auth *Authenticator, log zerolog.Logger) *Permissions {
	c := &Permissions{client: client, service: service, auth: auth, log: log.With().Str("component", "access").Logger()}
	c.users = &roleLoader{client: client, token: service, roles: map[string]*string{}}
	return c
}

// Enabled reports whether subscribers can share reads across users (a
// service token is configured).
func (c *Permissions) Enabled() bool { return c.service != "" }

// Load reads the access model; on failure the classes fall back to one per
// user until a later Load succeeds.
func (c *Permissions) Load(ctx context.Context) error {
	if c.service == "" {
		return nil
	}
	defer c.gen.Add(1)
	if cov, err := loadCoverage(ctx, c.client, c.service); err == nil {
		c.coverage.Store(cov)
	} else {
		c.coverage.Store(nil) // unknown: no notices
	}
	m, err := loadAccessModel(ctx, c.client, c.service)
	if err != nil {
		c.model.Store(nil)
		return err
	}
	c.model.Store(m)
	c.owners.Clear() // the regroup after a reread files the owner classes again
	c.ownerCount.Store(0)
	c.users.setFields(m.userFieldList(), m.userPaths)
	// Every user's role at once, while there are not too many: a reconnect
	// storm then costs no lookups (users created since are read on demand).
	err = c.users.preload(ctx)
	c.preloaded.Store(err == nil)
	if err != nil {
		// The roles known may be stale now: forget them (each user's is read
		// again at its next subscribe; meanwhile its class is its own).
		c.users.forgetAll()
		c.log.Warn().Err(err).Msg("users' roles not reread; subscribers read apart until they are")
	}
	return nil
}

// Classifier is the view that classifies.
func (c *Permissions) Classifier() Classifier { return Classifier{c} }

// Watcher is the view that follows access changes.
func (c *Permissions) Watcher() Watcher { return Watcher{c} }

// Coverage is the view that tells which collections a Flow sends.
func (c *Permissions) Coverage() Coverage { return Coverage{c} }
