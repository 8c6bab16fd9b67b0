package directus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
)

// accessModel is what decides a read in Directus (11+), loaded with the
// service token: roles and their parents, which policies are attached to
// roles, users and the public, each policy's admin and app access, the read
// rules, and the relations a query can follow. It is immutable once loaded;
// a reload makes a new one.
//
// Directus evaluates a read of user U holding a token as: the role R (the
// token's claim for a JWT, the user's role for a static token), R's tree of
// parent roles, the policies attached to those roles and to U (or, without
// a role, those attached to the public), admin if any is an admin policy
// (no rule applies then), app access if any has it (which adds the app's
// minimal rules on system collections), and the read rules of the policies,
// whose filters may use $CURRENT_USER, $CURRENT_ROLE, $CURRENT_ROLES,
// $CURRENT_POLICIES and $NOW.
type accessModel struct {
	parent       map[string]string   // role → parent role
	rolePolicies map[string][]string // role → policies attached to it
	userPolicies map[string][]string // user → policies attached to the user
	public       []string            // policies of the public (no role, no user)
	admin        map[string]bool     // policy → admin access
	app          map[string]bool     // policy → app access
	// ip marks the policies with ip_access: Directus applies them only to
	// requests from the listed addresses.
	ip map[string]bool
	// userRule[policy][collection] is how the policy's read rule on the
	// collection depends on the user ($CURRENT_USER...), when it does.
	userRule map[string]map[string]userDep
	// userFields are the fields of directus_users the service user reads
	// (the rules' $CURRENT_USER.<field> that its grant covers), and the
	// paths through their relations it reads as Directus does (userPaths:
	// the related collections each passes, userpath.go).
	userFields map[string]bool
	userPaths  map[string][]pathStep
	pathColls  map[string]bool // the collections of userPaths' steps
	// ownerRule[policy][collection] is F when the policy's read rule on the
	// collection is exactly F = $CURRENT_USER, "" for any other rule.
	ownerRule map[string]map[string]string
	schema    *schemaGraph
	// fingerprint hashes the rows the model was built from.
	fingerprint string
}

// access is one user's accountability as far as reads go.
type access struct {
	admin, app bool
	// ip is set when a policy that can apply has ip_access: whether it
	// applies depends on where the request comes from.
	ip       bool
	policies []string // sorted
}

// accessOf is the access of user (may be "") reading with role ("" none).
func (m *accessModel) accessOf(role, user string) access {
	seen := map[string]bool{}
	var policies []string
	add := func(ps []string) {
		for _, p := range ps {
			if !seen[p] {
				seen[p] = true
				policies = append(policies, p)
			}
		}
	}
	if role == "" {
		add(m.public)
	}
	// The role and its ancestors (bounded: a cycle cannot loop forever).
	for r, depth := role, 0; r != "" && depth < 64; r, depth = m.parent[r], depth+1 {
		add(m.rolePolicies[r])
	}
	if user != "" {
		add(m.userPolicies[user])
	}
	sort.Strings(policies)
	a := access{policies: policies}
	for _, p := range policies {
		a.admin = a.admin || m.admin[p]
		a.app = a.app || m.app[p]
		a.ip = a.ip || m.ip[p]
	}
	return a
}

// appUserCollections are the system collections whose app-access minimal
// read rules use $CURRENT_USER (Directus's appAccessMinimalPermissions).
var appUserCollections = map[string]bool{
	"directus_activity": true, "directus_comments": true, "directus_presets": true,
	"directus_notifications": true, "directus_shares": true, "directus_users": true,
}

// userDependence is how a read of collection with q, by a holder of a, can
// answer differently for two users with that same access: through the
// rules on the collections the read touches (all of them when the reach is
// unknown).
func (m *accessModel) userDependence(a access, collection string, q map[string]any) userDep {
	touched, all := m.schema.reach(collection, q)
	var d userDep
	if a.app && (all || slices.ContainsFunc(mapKeys(touched), func(c string) bool { return appUserCollections[c] })) {
		d.identity = true // the app's minimal rules name the user
	}
	for _, p := range a.policies {
		for c, dep := range m.userRule[p] {
			if all || touched[c] {
				d.merge(dep)
			}
		}
	}
	return d
}

// readsUserFields reports whether the service user reads every one of
// fields of directus_users.
func (m *accessModel) readsUserFields(fields []string) bool {
	for _, f := range fields {
		if !m.userFields[f] {
			return false
		}
	}
	return true
}

// userFieldList is userFields, sorted.
func (m *accessModel) userFieldList() []string {
	out := mapKeys(m.userFields)
	slices.Sort(out)
	return out
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// mentionsUser reports whether a filter (as JSON) uses the current user.
func mentionsUser(raw []byte) bool { return bytes.Contains(raw, []byte("$CURRENT_USER")) }

// loadAccessModel reads the model with token (the service token): only a
// model proven complete is returned (see model_load.go).
func loadAccessModel(ctx context.Context, c *Client, token string) (*accessModel, error) {
	grants, err := loadGrants(ctx, c, token)
	if err != nil {
		return nil, err
	}
	if err := checkGrants(grants); err != nil {
		return nil, err
	}
	type role struct {
		ID     string  `json:"id"`
		Parent *string `json:"parent"`
	}
	type row struct {
		Role   *string `json:"role"`
		User   *string `json:"user"`
		Policy string  `json:"policy"`
	}
	type policy struct {
		ID          string          `json:"id"`
		AdminAccess bool            `json:"admin_access"`
		AppAccess   bool            `json:"app_access"`
		IPAccess    json.RawMessage `json:"ip_access"`
	}
	type permission struct {
		Policy      *string         `json:"policy"`
		Collection  string          `json:"collection"`
		Permissions json.RawMessage `json:"permissions"`
		Fields      json.RawMessage `json:"fields"`
	}
	roles, err := listAll[role](ctx, c, token, "roles", url.Values{"fields": {"id,parent"}})
	if err != nil {
		return nil, err
	}
	rows, err := listAll[row](ctx, c, token, "access", url.Values{"fields": {"id,role,user,policy"}})
	if err != nil {
		return nil, err
	}
	policies, err := listAll[policy](ctx, c, token, "policies", url.Values{"fields": {"id,admin_access,app_access,ip_access"}})
	if err != nil {
		return nil, err
	}
	// The permissions' fields, where the service user may read them (flow
	// install grants it): they prove which of its own grants give whole
	// columns (userpath.go).
	permFields := "id,policy,collection,permissions"
	withFields := grants["directus_permissions"].covers([]string{"fields"})
	if withFields {
		permFields += ",fields"
	}
	perms, err := listAll[permission](ctx, c, token, "permissions", url.Values{"fields": {permFields}, "filter[action][_eq]": {"read"}})
	if err != nil {
		return nil, err
	}
	schema, err := loadSchema(ctx, c, token, grants)
	if err != nil {
		return nil, err
	}
	m := newAccessModel(schema)
	// What instances of a cluster compare before they share a group's
	// reads (broker.Fingerprinter): the rows every class is built from,
	// in their id order (listAll sorts).
	raw, _ := json.Marshal([]any{roles, rows, policies, perms})
	sum := sha256.Sum256(raw)
	m.fingerprint = hex.EncodeToString(sum[:16])
	for _, r := range roles {
		if r.Parent != nil {
			m.parent[r.ID] = *r.Parent
		}
	}
	for _, a := range rows {
		m.addAccess(a.Role, a.User, a.Policy)
	}
	for _, p := range policies {
		m.admin[p.ID], m.app[p.ID] = p.AdminAccess, p.AppAccess
		if hasIPAccess(p.IPAccess) {
			m.ip[p.ID] = true
		}
	}
	var svc *servicePerms
	if withFields {
		if svc, err = m.serviceGrants(ctx, c, token); err != nil {
			return nil, err
		}
		for _, p := range perms {
			if p.Policy != nil && slices.Contains(svc.policies, *p.Policy) {
				svc.grants[p.Collection] = append(svc.grants[p.Collection], serviceGrant{fields: fieldsOf(p.Fields), filtered: !emptyRule(p.Permissions)})
			}
		}
	}
	users := grants["directus_users"]
	for _, p := range perms {
		if p.Policy == nil {
			continue
		}
		m.addOwnerRule(*p.Policy, p.Collection, p.Permissions)
		dep := userDepOf(p.Permissions)
		if !dep.any() {
			continue
		}
		if m.userRule[*p.Policy] == nil {
			m.userRule[*p.Policy] = map[string]userDep{}
		}
		prev := m.userRule[*p.Policy][p.Collection]
		prev.merge(dep)
		m.userRule[*p.Policy][p.Collection] = prev
		for _, f := range dep.fields {
			if !strings.Contains(f, ".") {
				// A field of the user: its grant, exactly where the service
				// user's grants can be read.
				if users.covers([]string{f}) && (svc == nil || svc.reads("directus_users", []string{f})) {
					m.userFields[f] = true
				}
			} else if steps, ok := m.resolveUserPath(f, svc); ok {
				m.userFields[f] = true
				m.userPaths[f] = steps
				for _, s := range steps {
					m.pathColls[s.collection] = true
				}
			}
		}
	}
	return m, nil
}

// serviceGrants starts the service user's own permissions: whose they are
// (GET /users/me) and which policies apply to it; the caller files the
// grants.
func (m *accessModel) serviceGrants(ctx context.Context, c *Client, token string) (*servicePerms, error) {
	data, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"users", "me"}, Token: token, Kind: "model",
		Query: url.Values{"fields": {"id,role"}}})
	if err != nil {
		return nil, fmt.Errorf("access model: read the service user: %w", err)
	}
	var me struct {
		ID   string  `json:"id"`
		Role *string `json:"role"`
	}
	if err := json.Unmarshal(data, &me); err != nil {
		return nil, fmt.Errorf("access model: read the service user: %w", err)
	}
	role := ""
	if me.Role != nil {
		role = *me.Role
	}
	a := m.accessOf(role, me.ID)
	return &servicePerms{admin: a.admin, policies: a.policies, grants: map[string][]serviceGrant{}}, nil
}

func newAccessModel(schema *schemaGraph) *accessModel {
	return &accessModel{
		parent: map[string]string{}, rolePolicies: map[string][]string{}, userPolicies: map[string][]string{},
		admin: map[string]bool{}, app: map[string]bool{}, ip: map[string]bool{}, userRule: map[string]map[string]userDep{},
		userFields: map[string]bool{}, userPaths: map[string][]pathStep{}, pathColls: map[string]bool{}, ownerRule: map[string]map[string]string{}, schema: schema,
	}
}

// addAccess files one access row. Directus attaches a row to the user when
// it names one and to the role's users when it names a role: a row naming
// both applies to both (user = U OR role IN U's roles), one naming neither
// to the public.
func (m *accessModel) addAccess(role, user *string, policy string) {
	if role != nil {
		m.rolePolicies[*role] = append(m.rolePolicies[*role], policy)
	}
	if user != nil {
		m.userPolicies[*user] = append(m.userPolicies[*user], policy)
	}
	if role == nil && user == nil {
		m.public = append(m.public, policy)
	}
}

// hasIPAccess reports whether a policy's ip_access limits where it applies
// (a list or a comma-separated string, as Directus versions store it).
func hasIPAccess(raw json.RawMessage) bool {
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return len(list) > 0
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return strings.TrimSpace(s) != ""
	}
	return len(raw) > 0 && string(raw) != "null"
}
