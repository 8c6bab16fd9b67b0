package flow

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// The broker's service user: a user without a role whose one policy may
// read only what the access classes are computed from (and the Flows, to
// tell which collections they cover). Its static token is the broker's
// directus_service_token.
const (
	ServiceUserEmail  = "directus-ws-broker-service@example.com"
	servicePolicyName = "directus-ws-broker service (read the permission model)"
)

// servicePermissions are the policy's read permissions: collection → the
// fields it needs.
var servicePermissions = map[string][]string{
	"directus_users":       {"id", "role"},
	"directus_roles":       {"id", "parent"},
	"directus_access":      {"id", "role", "user", "policy"},
	"directus_policies":    {"id", "admin_access", "app_access", "ip_access"},
	"directus_permissions": {"id", "policy", "collection", "action", "permissions", "fields"},
	"directus_relations":   {"*"},
	"directus_fields":      {"*"},
	"directus_flows":       {"id", "name", "status", "trigger", "options"},
}

// EnsureServiceUser makes the service policy, its permissions and the
// service user exist (creating or updating them, with adminToken), gives
// the user a new static token and returns it.
func EnsureServiceUser(ctx context.Context, c *directus.Client, adminToken string) (string, error) {
	if err := CheckAdmin(ctx, c, adminToken); err != nil {
		return "", err
	}
	policy, err := ensureServicePolicy(ctx, c, adminToken)
	if err != nil {
		return "", err
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b[:])
	var users []struct {
		ID string `json:"id"`
	}
	if err := getJSON(ctx, c, adminToken, "users", url.Values{"filter[email][_eq]": {ServiceUserEmail}, "fields": {"id"}}, &users); err != nil {
		return "", err
	}
	var user string
	if len(users) == 0 {
		data, err := c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"users"}, Token: adminToken, Body: map[string]any{
			"email": ServiceUserEmail, "first_name": "directus-ws-broker", "status": "active", "role": nil, "token": token,
			"description": "Service user of directus-ws-broker: reads the permission model only. Managed by `directus-ws-broker flow install --create-service-token`.",
		}})
		if err != nil {
			return "", fmt.Errorf("create the service user: %w", err)
		}
		if user, err = created(data); err != nil {
			return "", fmt.Errorf("create the service user: %w", err)
		}
	} else {
		user = users[0].ID
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodPatch, Segments: []string{"users", user}, Token: adminToken,
			Body: map[string]any{"token": token, "status": "active", "role": nil}}); err != nil {
			return "", fmt.Errorf("update the service user: %w", err)
		}
	}
	var rows []struct {
		ID string `json:"id"`
	}
	if err := getJSON(ctx, c, adminToken, "access", url.Values{"filter[user][_eq]": {user}, "filter[policy][_eq]": {policy}, "fields": {"id"}}, &rows); err != nil {
		return "", err
	}
	if len(rows) == 0 {
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"access"}, Token: adminToken,
			Body: map[string]any{"user": user, "policy": policy}}); err != nil {
			return "", fmt.Errorf("attach the service policy to the service user: %w", err)
		}
	}
	if err := ensureOwnerPolicy(ctx, c, adminToken, user); err != nil {
		return "", err
	}
	return token, nil
}

// ensureServicePolicy makes the policy with exactly servicePermissions.
func ensureServicePolicy(ctx context.Context, c *directus.Client, token string) (string, error) {
	var policies []struct {
		ID string `json:"id"`
	}
	if err := getJSON(ctx, c, token, "policies", url.Values{"filter[name][_eq]": {servicePolicyName}, "fields": {"id"}}, &policies); err != nil {
		return "", err
	}
	var policy string
	if len(policies) == 0 {
		data, err := c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"policies"}, Token: token, Body: map[string]any{
			"name": servicePolicyName, "icon": "key", "app_access": false, "admin_access": false, "enforce_tfa": false,
			"description": "Lets directus-ws-broker read roles, policies, access rows, read permissions, relations, users' roles and Flows.",
		}})
		if err != nil {
			return "", fmt.Errorf("create the service policy: %w", err)
		}
		if policy, err = created(data); err != nil {
			return "", fmt.Errorf("create the service policy: %w", err)
		}
	} else {
		policy = policies[0].ID
	}
	var perms []struct {
		ID json.Number `json:"id"`
	}
	if err := getJSON(ctx, c, token, "permissions", url.Values{"filter[policy][_eq]": {policy}, "fields": {"id"}}, &perms); err != nil {
		return "", err
	}
	if len(perms) > 0 {
		ids := make([]json.Number, len(perms))
		for i, p := range perms {
			ids[i] = p.ID
		}
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodDelete, Segments: []string{"permissions"}, Token: token, Body: ids}); err != nil {
			return "", fmt.Errorf("reset the service policy's permissions: %w", err)
		}
	}
	userFields, err := ruleUserFields(ctx, c, token)
	if err != nil {
		return "", err
	}
	for coll, fields := range servicePermissions {
		if coll == "directus_users" {
			// And the fields of users that rules name ($CURRENT_USER.team):
			// users with equal values then share reads.
			fields = append(slices.Clone(fields), userFields...)
		}
		body := map[string]any{"policy": policy, "collection": coll, "action": "read", "fields": fields, "permissions": map[string]any{}}
		_, err := c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"permissions"}, Token: token, Body: body})
		var de *directus.Error
		if errors.As(err, &de) && de.Code == "RESOURCE_RESTRICTED" {
			// Directus 12 without a license allows no field lists: all
			// fields, still read only.
			body["fields"] = []string{"*"}
			_, err = c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"permissions"}, Token: token, Body: body})
		}
		if err != nil {
			return "", fmt.Errorf("grant the service policy read on %s: %w", coll, err)
		}
	}
	if err := grantSchema(ctx, c, token, policy); err != nil {
		return "", err
	}
	return policy, nil
}

// readRules are the collections and rules of every read permission.
func readRules(ctx context.Context, c *directus.Client, token string) (colls []string, rules []json.RawMessage, err error) {
	var perms []struct {
		Collection  string          `json:"collection"`
		Permissions json.RawMessage `json:"permissions"`
	}
	if err := getJSON(ctx, c, token, "permissions", url.Values{"filter[action][_eq]": {"read"}, "fields": {"collection,permissions"}, "limit": {"-1"}}, &perms); err != nil {
		return nil, nil, err
	}
	for _, p := range perms {
		colls = append(colls, p.Collection)
		rules = append(rules, p.Permissions)
	}
	return colls, rules, nil
}

// ruleUserFields are the fields of directus_users the read rules name as
// $CURRENT_USER.<field>, and the first segment of each path through the
// user's relations ($CURRENT_USER.org.tier: org; the related collections'
// grants are the owner lookup policy's, pathGrants).
func ruleUserFields(ctx context.Context, c *directus.Client, token string) ([]string, error) {
	_, rules, err := readRules(ctx, c, token)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range directus.UserFields(rules) {
		f, _, _ = strings.Cut(f, ".")
		if f != "id" && f != "role" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out, nil
}

// SyncServicePolicy brings the service policy in step with the schema (a
// collection added since flow install) and the rules, keeping the service
// user's token.
func SyncServicePolicy(ctx context.Context, c *directus.Client, adminToken string) error {
	if err := CheckAdmin(ctx, c, adminToken); err != nil {
		return err
	}
	if _, err := ensureServicePolicy(ctx, c, adminToken); err != nil {
		return err
	}
	var users []struct {
		ID string `json:"id"`
	}
	if err := getJSON(ctx, c, adminToken, "users", url.Values{"filter[email][_eq]": {ServiceUserEmail}, "fields": {"id"}}, &users); err != nil {
		return err
	}
	if len(users) == 0 {
		return nil // no service user yet: flow install --create-service-token makes it
	}
	return ensureOwnerPolicy(ctx, c, adminToken, users[0].ID)
}

// SyncExistingServiceUser is SyncServicePolicy when the service user
// exists (flow install without --create-service-token: the rules and the
// schema may have changed, the token stays); false when there is none.
func SyncExistingServiceUser(ctx context.Context, c *directus.Client, adminToken string) (bool, error) {
	var users []struct {
		ID string `json:"id"`
	}
	if err := getJSON(ctx, c, adminToken, "users", url.Values{"filter[email][_eq]": {ServiceUserEmail}, "fields": {"id"}}, &users); err != nil {
		return false, err
	}
	if len(users) == 0 {
		return false, nil
	}
	return true, SyncServicePolicy(ctx, c, adminToken)
}

// ownerPolicyName is the policy that lets the service user read, of the
// collections with owner rules (F = $CURRENT_USER), the primary key and F
// of every item: whose items an event's keys are (directus/owners.go).
const ownerPolicyName = "directus-ws-broker owner lookups"

// ensureOwnerPolicy makes the owner lookup policy hold exactly the grants
// the owner rules and the user paths need, attached to user.
func ensureOwnerPolicy(ctx context.Context, c *directus.Client, token, user string) error {
	colls, rules, err := readRules(ctx, c, token)
	if err != nil {
		return err
	}
	grants, err := lookupGrants(ctx, c, token, colls, rules)
	if err != nil {
		return err
	}
	var policies []struct {
		ID string `json:"id"`
	}
	if err := getJSON(ctx, c, token, "policies", url.Values{"filter[name][_eq]": {ownerPolicyName}, "fields": {"id"}}, &policies); err != nil {
		return err
	}
	var policy string
	if len(policies) == 0 {
		data, err := c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"policies"}, Token: token, Body: map[string]any{
			"name": ownerPolicyName, "icon": "key", "app_access": false, "admin_access": false, "enforce_tfa": false,
			"description": "Lets directus-ws-broker read who owns each item of the collections with owner rules (primary key and owner field only), so that an event is read only for its owner.",
		}})
		if err != nil {
			return fmt.Errorf("create the owner lookup policy: %w", err)
		}
		if policy, err = created(data); err != nil {
			return fmt.Errorf("create the owner lookup policy: %w", err)
		}
	} else {
		policy = policies[0].ID
	}
	var perms []struct {
		ID json.Number `json:"id"`
	}
	if err := getJSON(ctx, c, token, "permissions", url.Values{"filter[policy][_eq]": {policy}, "fields": {"id"}}, &perms); err != nil {
		return err
	}
	if len(perms) > 0 {
		ids := make([]json.Number, len(perms))
		for i, p := range perms {
			ids[i] = p.ID
		}
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodDelete, Segments: []string{"permissions"}, Token: token, Body: ids}); err != nil {
			return fmt.Errorf("reset the owner lookup policy: %w", err)
		}
	}
	for coll, fields := range grants {
		body := map[string]any{"policy": policy, "collection": coll, "action": "read", "fields": fields, "permissions": map[string]any{}}
		_, err = c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"permissions"}, Token: token, Body: body})
		var de *directus.Error
		if errors.As(err, &de) && de.Code == "RESOURCE_RESTRICTED" {
			return nil // Directus 12 without a license: no field lists; owners and paths read apart
		}
		if err != nil {
			return fmt.Errorf("grant the lookups of %s: %w", coll, err)
		}
	}
	var rows []struct {
		ID string `json:"id"`
	}
	if err := getJSON(ctx, c, token, "access", url.Values{"filter[user][_eq]": {user}, "filter[policy][_eq]": {policy}, "fields": {"id"}}, &rows); err != nil {
		return err
	}
	if len(rows) == 0 {
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"access"}, Token: token,
			Body: map[string]any{"user": user, "policy": policy}}); err != nil {
			return fmt.Errorf("attach the owner lookup policy to the service user: %w", err)
		}
	}
	return nil
}

// grantSchema lets the service user see every field and relation of each
// collection and no item: a read permission with every field and a rule no
// item matches (its primary key is null). Directus lists to a reader only
// the fields and relations of collections it may read, so without this
// the broker cannot prove where a relational query goes, and shares no
// such read between users with per-user rules. Directus 12 without a
// license refuses item rules: nothing is granted there (the broker then
// reads relational queries of such users apart).
// lookupGrants are the owner lookup policy's rows, collection → fields,
// all with no row filter: of each collection with owner rules its primary
// key and owner fields, and of each collection a rule's user path passes
// ($CURRENT_USER.org.tier) its primary key and the path's next field. A
// collection that is both gets one row: the model proves a path's grant
// from a single row (directus/userpath.go).
func lookupGrants(ctx context.Context, c *directus.Client, token string, colls []string, rules []json.RawMessage) (map[string][]string, error) {
	out := map[string][]string{}
	for coll, fields := range directus.OwnerRules(colls, rules) {
		pk, err := directus.PrimaryKey(ctx, c, token, coll)
		if err != nil {
			return nil, fmt.Errorf("owner lookups of %s: %w", coll, err)
		}
		out[coll] = append([]string{pk}, fields...)
	}
	paths, err := directus.UserPathGrants(ctx, c, token, directus.UserFields(rules))
	if err != nil {
		return nil, fmt.Errorf("user path lookups: %w", err)
	}
	for coll, fields := range paths {
		if coll == "directus_users" {
			continue // the service policy's (ruleUserFields)
		}
		for _, f := range fields {
			if !slices.Contains(out[coll], f) {
				out[coll] = append(out[coll], f)
			}
		}
	}
	return out, nil
}

func grantSchema(ctx context.Context, c *directus.Client, token, policy string) error {
	var colls []struct {
		Collection string          `json:"collection"`
		Schema     json.RawMessage `json:"schema"`
	}
	if err := getJSON(ctx, c, token, "collections", url.Values{}, &colls); err != nil {
		return err
	}
	for _, coll := range colls {
		if strings.HasPrefix(coll.Collection, "directus_") || len(coll.Schema) == 0 || string(coll.Schema) == "null" {
			continue // system collections, folders
		}
		pk, err := directus.PrimaryKey(ctx, c, token, coll.Collection)
		if err != nil {
			return fmt.Errorf("grant the service policy the schema of %s: %w", coll.Collection, err)
		}
		body := map[string]any{"policy": policy, "collection": coll.Collection, "action": "read", "fields": []string{"*"},
			"permissions": map[string]any{pk: map[string]any{"_null": true}}}
		_, err = c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"permissions"}, Token: token, Body: body})
		var de *directus.Error
		if errors.As(err, &de) && de.Code == "RESOURCE_RESTRICTED" {
			return nil
		}
		if err != nil {
			return fmt.Errorf("grant the service policy the schema of %s: %w", coll.Collection, err)
		}
	}
	return nil
}

func getJSON(ctx context.Context, c *directus.Client, token, path string, q url.Values, out any) error {
	q.Set("limit", "-1")
	data, err := c.Do(ctx, directus.Request{Method: http.MethodGet, Segments: []string{path}, Token: token, Query: q})
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}
