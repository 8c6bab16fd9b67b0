package directus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
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
	// userRule[policy][collection] is true when a read rule of the policy on
	// the collection depends on the user ($CURRENT_USER...).
	userRule map[string]map[string]bool
	schema   *schemaGraph
}

// access is one user's accountability as far as reads go.
type access struct {
	admin, app bool
	policies   []string // sorted
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
	}
	return a
}

// appUserCollections are the system collections whose app-access minimal
// read rules use $CURRENT_USER (Directus's appAccessMinimalPermissions).
var appUserCollections = map[string]bool{
	"directus_activity": true, "directus_comments": true, "directus_presets": true,
	"directus_notifications": true, "directus_shares": true, "directus_users": true,
}

// userDependent reports whether a read of collection with q, by a holder of
// a, can answer differently for two users with that same access: a rule on
// a collection the read touches depends on the user.
func (m *accessModel) userDependent(a access, collection string, q map[string]any) bool {
	touched, all := m.schema.reach(collection, q)
	depends := func(c string) bool {
		if a.app && appUserCollections[c] {
			return true
		}
		for _, p := range a.policies {
			if m.userRule[p][c] {
				return true
			}
		}
		return false
	}
	if all {
		if a.app {
			return true
		}
		for _, p := range a.policies {
			if len(m.userRule[p]) > 0 {
				return true
			}
		}
		return false
	}
	for c := range touched {
		if depends(c) {
			return true
		}
	}
	return false
}

// mentionsUser reports whether a filter (as JSON) uses the current user.
func mentionsUser(raw []byte) bool { return bytes.Contains(raw, []byte("$CURRENT_USER")) }

// loadAccessModel reads the model with token (a service token that may
// read roles, access, policies, permissions and relations).
func loadAccessModel(ctx context.Context, c *Client, token string) (*accessModel, error) {
	get := func(path string, q url.Values, out any) error {
		q.Set("limit", "-1")
		data, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: strings.Split(path, "/"), Query: q, Token: token, Kind: "model"})
		if err != nil {
			return fmt.Errorf("access model: read %s: %w", path, err)
		}
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("access model: read %s: %w", path, err)
		}
		return nil
	}
	var roles []struct {
		ID     string  `json:"id"`
		Parent *string `json:"parent"`
	}
	var rows []struct {
		Role   *string `json:"role"`
		User   *string `json:"user"`
		Policy string  `json:"policy"`
	}
	var policies []struct {
		ID          string `json:"id"`
		AdminAccess bool   `json:"admin_access"`
		AppAccess   bool   `json:"app_access"`
	}
	var perms []struct {
		Policy      *string         `json:"policy"`
		Collection  string          `json:"collection"`
		Permissions json.RawMessage `json:"permissions"`
	}
	if err := get("roles", url.Values{"fields": {"id,parent"}}, &roles); err != nil {
		return nil, err
	}
	if err := get("access", url.Values{"fields": {"role,user,policy"}}, &rows); err != nil {
		return nil, err
	}
	if err := get("policies", url.Values{"fields": {"id,admin_access,app_access"}}, &policies); err != nil {
		return nil, err
	}
	if err := get("permissions", url.Values{"fields": {"policy,collection,permissions"}, "filter[action][_eq]": {"read"}}, &perms); err != nil {
		return nil, err
	}
	schema, err := loadSchema(ctx, c, token)
	if err != nil {
		return nil, err
	}
	m := &accessModel{
		parent: map[string]string{}, rolePolicies: map[string][]string{}, userPolicies: map[string][]string{},
		admin: map[string]bool{}, app: map[string]bool{}, userRule: map[string]map[string]bool{}, schema: schema,
	}
	for _, r := range roles {
		if r.Parent != nil {
			m.parent[r.ID] = *r.Parent
		}
	}
	for _, a := range rows {
		switch {
		case a.Role != nil:
			m.rolePolicies[*a.Role] = append(m.rolePolicies[*a.Role], a.Policy)
		case a.User != nil:
			m.userPolicies[*a.User] = append(m.userPolicies[*a.User], a.Policy)
		default:
			m.public = append(m.public, a.Policy)
		}
	}
	for _, p := range policies {
		m.admin[p.ID], m.app[p.ID] = p.AdminAccess, p.AppAccess
	}
	for _, p := range perms {
		if p.Policy == nil || !mentionsUser(p.Permissions) {
			continue
		}
		if m.userRule[*p.Policy] == nil {
			m.userRule[*p.Policy] = map[string]bool{}
		}
		m.userRule[*p.Policy][p.Collection] = true
	}
	return m, nil
}
