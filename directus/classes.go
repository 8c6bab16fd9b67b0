package directus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Classes is the broker's Classifier over Directus's permission model: it
// puts subscriptions whose reads Directus is guaranteed to answer alike in
// one access class, so a read per (class, query) serves them all.
//
// The class key (see Class) is built from everything Directus uses to
// answer a read (accessModel): admin access, or the role and the complete
// set of policies; plus the user whenever a rule that can apply to the read
// depends on the user, or the subscription's own query does. Anything it
// cannot establish — no service token, the model or the user's role not
// loaded — falls back to one class per user (and role the token carries):
// never shared between users.
//
// Classes learns of changes from the events of Directus's system
// collections (AccessChanged) and rereads everything every refresh
// interval (Refresh).
type Classes struct {
	client  *Client
	service string
	auth    *Authenticator
	log     zerolog.Logger

	model    atomic.Pointer[accessModel]
	coverage atomic.Pointer[coverage]
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
	owners  sync.Map
	lookups ownerLookups
}

// Generation counts the rereads of what decides access.
func (c *Classes) Generation() uint64 { return c.gen.Load() }

// NewClasses makes the classifier; service is the service token ("" = none:
// one class per user). It does no I/O: Load reads the model.
func NewClasses(client *Client, service string, auth *Authenticator, log zerolog.Logger) *Classes {
	c := &Classes{client: client, service: service, auth: auth, log: log.With().Str("component", "access").Logger()}
	c.users = &roleLoader{client: client, token: service, roles: map[string]*string{}}
	return c
}

// Enabled reports whether subscribers can share reads across users (a
// service token is configured).
func (c *Classes) Enabled() bool { return c.service != "" }

// Load reads the access model; on failure the classes fall back to one per
// user until a later Load succeeds.
func (c *Classes) Load(ctx context.Context) error {
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
	c.users.setFields(m.userFieldList())
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

// Prepare makes sure what Class needs of id is loaded: the current role of
// the token's user (read with the service token, batched with other
// subscribers' lookups; a JWT's role claim is shared only when it is the
// user's role now). Without it Class falls back to a class per user.
func (c *Classes) Prepare(ctx context.Context, id Identity) error {
	if c.service == "" || id.UserID == "" {
		return nil
	}
	return c.users.load(ctx, []string{id.UserID}, false)
}

// Class implements broker.Classifier.
func (c *Classes) Class(cred broker.Credentials, collection string, q broker.Query) string {
	id, _ := cred.Principal.(Identity)
	switch {
	case cred.Token == "":
		// The public role: no user, no role, the same policies for all.
		if m := c.model.Load(); m == nil || !m.accessOf("", "").ip {
			return "public"
		}
		if cred.Addr == "" {
			return c.perUser(reasonIPAccess, "public|"+tokenKey(""), cred)
		}
		return "public|ip:" + cred.Addr
	case id.UserID == "" && id.JWT && id.Share != "":
		// A share token (Directus verified it: a JWT; it has no user).
		return "share:" + id.Share
	case id.UserID == "":
		// Not validated by Directus: shares nothing.
		if c.addrMatters() && cred.Addr != "" {
			return tokenKey(cred.Token) + "|ip:" + cred.Addr
		}
		return tokenKey(cred.Token)
	}
	fallback := "user:" + id.UserID + "|static"
	if id.JWT {
		fallback = "user:" + id.UserID + "|jwt:" + id.Role
	}
	m := c.model.Load()
	if m == nil {
		return c.perUser(reasonNoModel, fallback, cred)
	}
	role, ok := c.users.role(id.UserID)
	if !ok {
		return c.perUser(reasonUserUnknown, fallback, cred)
	}
	// A JWT reads with the role it carries, a static token with the user's
	// role now. Shared only when the two agree: a JWT issued before a role
	// change, and a static token that merely looks like a JWT, read apart.
	if id.hasClaim && id.claim != role {
		return c.perUser(reasonRoleClaim, fallback, cred)
	}
	if id.JWT && id.Role != role {
		return c.perUser(reasonRoleClaim, fallback, cred)
	}
	a := m.accessOf(role, id.UserID)
	if a.ip && cred.Addr == "" {
		// Whether such a policy applies depends on the client's address.
		return c.perUser(reasonIPAccess, fallback, cred)
	}
	if _, ok := q["version"]; ok && !a.admin {
		// A version is read under the reader's rules on directus_versions.
		return c.perUser(reasonVersion, fallback, cred)
	}
	qj, _ := json.Marshal(q)
	byQuery := strings.Contains(string(qj), "$CURRENT_")
	var key string
	if a.admin {
		key = "admin" // admins bypass every rule
	} else {
		key = fmt.Sprintf("r:%s|p:%s|app:%v", role, strings.Join(a.policies, ","), a.app)
	}
	if byQuery {
		// The query itself names the user (or role, or policies).
		key += fmt.Sprintf("|u:%s|r:%s|p:%s", id.UserID, role, strings.Join(a.policies, ","))
	} else if dep := m.userDependence(a, collection, q); !a.admin && dep.identity {
		key += "|u:" + id.UserID
	} else if !a.admin && len(dep.fields) > 0 {
		// The rules name only fields of the user: equal values, equal
		// answers (Directus substitutes the values before it reads).
		vals, ok := c.users.valuesOf(id.UserID, dep.fields)
		if !ok || !m.readsUserFields(dep.fields) {
			return c.perUser(reasonUserField, fallback, cred)
		}
		key += "|uf:" + vals
	}
	var owner *ownerSpec
	if f, uf, ok := m.ownerOf(a, collection); ok && !byQuery {
		if uf == "" && strings.Contains(key, "|u:") {
			// An owner class: its members' items are those whose f is them.
			v, _ := json.Marshal(id.UserID)
			owner = &ownerSpec{collection: collection, field: f, value: string(v)}
			key += "|own:" + f
		} else if vals, ok := c.users.valuesOf(id.UserID, []string{uf}); uf != "" && ok && strings.Contains(key, "|uf:") {
			// A team class: the items whose f is the members' uf.
			owner = &ownerSpec{collection: collection, field: f, value: strings.TrimPrefix(vals, uf+"=")}
			key += "|own:" + f
		}
	} else if f, ok := m.mixedOf(a, collection); ok && !byQuery && strings.Contains(key, "|u:") && m.onlyRootDepends(a, collection, q) {
		// A mixed class: others' items are read once for every member of
		// the same policies (mixed.go).
		v, _ := json.Marshal(id.UserID)
		share := "class:" + key[:strings.Index(key, "|u:")] + "|mix:" + f
		if a.ip {
			share += "|ip:" + cred.Addr
		}
		owner = &ownerSpec{collection: collection, field: f, value: string(v), mixed: true, share: share}
		key += "|mix:" + f
	}
	if a.ip {
		// Whether a policy with ip_access applies depends on where the read
		// comes from: members share one address, and reads carry it.
		key += "|ip:" + cred.Addr
	}
	if owner != nil {
		c.owners.Store("class:"+key+"\x00"+collection, *owner)
	}
	return "class:" + key
}

// AddrScoped implements broker.AddrScoped.
func (c *Classes) AddrScoped(class string) bool { return strings.Contains(class, "|ip:") }

func tokenKey(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "token:" + hex.EncodeToString(sum[:8])
}

// Why a subscription's class is one of its own (fail closed): what could
// not be established to share its reads.
const (
	reasonNoModel     = "model_unavailable" // no service token, or the model could not be read completely
	reasonUserUnknown = "user_unknown"      // the user's current role is not known
	reasonRoleClaim   = "role_claim"        // the token's role claim is not the user's role now
	reasonIPAccess    = "ip_access"         // a policy that can apply has ip_access
	reasonVersion     = "version"           // the query reads a content version
	reasonUserField   = "user_field"        // a rule names a field of the user the service user cannot read, or that is not plain
)

// perUser returns key, a class of the user's (or token's) own, and counts
// why. When a policy with ip_access may apply (see addrMatters) the class
// carries the client's address, and so do its reads.
func (c *Classes) perUser(reason, key string, cred broker.Credentials) string {
	if c.failClosed.add(reason) {
		c.log.Warn().Str("reason", reason).Msg("subscriptions read apart: something that decides sharing cannot be established (counted in broker_class_per_user_total)")
	}
	if cred.Token != "" && !strings.HasPrefix(key, "user:") {
		key += "|" + tokenKey(cred.Token)
	}
	if cred.Addr != "" && c.addrMatters() {
		key += "|ip:" + cred.Addr
	}
	return key
}

// addrMatters reports whether a policy with ip_access may exist: the model
// lists one, or a service token is configured but the model could not be
// read. Without a service token the broker cannot know, and classes are
// per user without the address (README: ip_access needs a service token).
func (c *Classes) addrMatters() bool {
	if m := c.model.Load(); m != nil {
		return len(m.ip) > 0
	}
	return c.service != ""
}

// reasonCounts counts the subscriptions classed per user, by reason.
type reasonCounts struct {
	mu sync.Mutex
	n  map[string]int64
}

// add counts reason and reports whether it is its first time.
func (r *reasonCounts) add(reason string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int64{}
	}
	r.n[reason]++
	return r.n[reason] == 1
}

// PerUser reports how often a class was made per user because something
// that decides sharing could not be established, by reason (the metric
// broker_class_per_user_total).
func (c *Classes) PerUser() map[string]int64 {
	c.failClosed.mu.Lock()
	defer c.failClosed.mu.Unlock()
	out := make(map[string]int64, len(c.failClosed.n))
	for k, v := range c.failClosed.n {
		out[k] = v
	}
	return out
}

// systemAccess lists the system collections whose changes can change a
// class: the Flow sends their events (flow install subscribes to them).
var systemAccess = map[string]bool{
	"directus_users": true, "directus_roles": true, "directus_policies": true,
	"directus_access": true, "directus_permissions": true, "directus_relations": true,
}

// Concerns implements broker.DoubtScope: a change of users concerns only
// their tokens; any other access change may concern every subscription.
func (c *Classes) Concerns(e broker.Event, cred broker.Credentials) bool {
	if e.Collection != "directus_users" {
		return true
	}
	id, _ := cred.Principal.(Identity)
	if id.UserID == "" {
		return false // the public and shares: no user a change of users names
	}
	return slices.Contains(e.Keys, id.UserID)
}

// Forget implements broker.Forgetter: a change of users no subscription
// holds a token of forgets their roles (read again at their next
// subscribe) and what was proven under the old ones.
func (c *Classes) Forget(e broker.Event) {
	c.users.forget(e.Keys)
	c.gen.Add(1)
}

// IsAccessEvent implements broker.AccessWatcher: e is a change of what
// decides access.
func (c *Classes) IsAccessEvent(e broker.Event) bool { return systemAccess[e.Collection] }

// AccessChanged implements broker.AccessWatcher. A change of roles,
// policies, access rows, permissions or relations rereads the model. A
// change of users rereads their roles, and the tokens of theirs that are in
// use are checked again with Directus: those it refuses now (a token
// rotated, a user suspended or deleted) are returned.
func (c *Classes) AccessChanged(ctx context.Context, events []broker.Event, live []broker.Credentials) (refused []string, err error) {
	users := map[string]bool{}
	reload := false
	for _, e := range events {
		switch {
		case e.Collection == "directus_users":
			for _, k := range e.Keys {
				users[k] = true
			}
		case systemAccess[e.Collection]:
			reload = true
		}
	}
	var errs []error
	if reload {
		if err := c.Load(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(users) > 0 {
		if c.service != "" {
			ids := make([]string, 0, len(users))
			for u := range users {
				ids = append(ids, u)
			}
			if err := c.users.load(ctx, ids, true); err != nil {
				errs = append(errs, err)
			}
		}
		refused = append(refused, c.revalidate(ctx, live, func(id Identity) bool { return users[id.UserID] })...)
		c.gen.Add(1)
	}
	return refused, errors.Join(errs...)
}

// Refresh rereads the model and the roles of every user in live: the
// safety net under the events.
func (c *Classes) Refresh(ctx context.Context, live []broker.Credentials) error {
	if c.service == "" {
		return nil
	}
	err := c.Load(ctx)
	if c.preloaded.Load() {
		return err
	}
	var ids []string
	seen := map[string]bool{}
	for _, cred := range live {
		if id, _ := cred.Principal.(Identity); id.UserID != "" && !seen[id.UserID] {
			seen[id.UserID] = true
			ids = append(ids, id.UserID)
		}
	}
	if len(ids) > 0 {
		err = errors.Join(err, c.users.load(ctx, ids, true))
	}
	return err
}

// revalidate checks again with Directus each live token of the users match
// selects, and returns those it refuses.
func (c *Classes) revalidate(ctx context.Context, live []broker.Credentials, match func(Identity) bool) []string {
	var refused []string
	seen := map[string]bool{}
	for _, cred := range live {
		id, _ := cred.Principal.(Identity)
		if cred.Token == "" || seen[cred.Token] || !match(id) {
			continue
		}
		seen[cred.Token] = true
		if _, err := c.auth.Fresh(ctx, cred.Token); err != nil {
			var de *Error
			if errors.As(err, &de) && de.Status == http.StatusUnauthorized {
				refused = append(refused, cred.Token)
			} else {
				c.log.Warn().Err(err).Str("user", id.UserID).Msg("could not check a token again after a change of its user")
			}
		}
	}
	return refused
}
