package directus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"sync"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Classifier is the broker's Classifier over Directus's permission model:
// it puts subscriptions whose reads Directus is guaranteed to answer alike
// in one access class, so a read per (class, query) serves them all.
//
// The class key (see Class) is built from everything Directus uses to
// answer a read (accessModel): admin access, or the role and the complete
// set of policies; plus the user whenever a rule that can apply to the read
// depends on the user, or the subscription's own query does. Anything it
// cannot establish — no service token, the model or the user's role not
// loaded — falls back to one class per user (and role the token carries):
// never shared between users. It also filters (owner rules, owners.go) and
// splits (mixed rules, mixed.go) a batch's keys.
type Classifier struct{ *Permissions }

// Prepare makes sure what Class needs of id is loaded: the current role of
// the token's user (read with the service token, batched with other
// subscribers' lookups; a JWT's role claim is shared only when it is the
// user's role now). Without it Class falls back to a class per user.
func (c Classifier) Prepare(ctx context.Context, id Identity) error {
	if c.service == "" || id.UserID == "" {
		return nil
	}
	return c.users.load(ctx, []string{id.UserID}, false)
}

// Class implements broker.Classifier.
func (c Classifier) Class(cred broker.Credentials, collection string, q broker.Query) string {
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
		if !ok || !m.readsUserFields(dep.fields) || !c.pathsCovered(m, dep.fields) {
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
		c.fileOwner("class:"+key+"\x00"+collection, *owner)
	}
	return "class:" + key
}

// maxOwnerClasses bounds the owner and mixed classes filed (one per user
// and collection, ~200 bytes each) until the next reread clears them; past
// it a class is not filed, and its reads are made as without the shortcut
// (every key read: correct, only slower).
var maxOwnerClasses int64 = 200000

func (c Classifier) fileOwner(key string, spec ownerSpec) {
	if _, known := c.owners.Load(key); known {
		c.owners.Store(key, spec)
		return
	}
	if c.ownerCount.Add(1) > maxOwnerClasses {
		c.ownerCount.Add(-1)
		return
	}
	if _, loaded := c.owners.LoadOrStore(key, spec); loaded {
		c.ownerCount.Add(-1)
		c.owners.Store(key, spec)
	}
}

// AddrScoped implements broker.AddrScoped.
func (c Classifier) AddrScoped(class string) bool { return strings.Contains(class, "|ip:") }

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
func (c Classifier) perUser(reason, key string, cred broker.Credentials) string {
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
// per user without the address (docs/sharing.md: ip_access needs a service token).
func (c Classifier) addrMatters() bool {
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
func (c Classifier) PerUser() map[string]int64 {
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

// Classes of instances applying the same model may share reads across a
// cluster (issue 24).
var _ broker.Fingerprinter = Classifier{}
