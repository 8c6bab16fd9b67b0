package directus

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
)

// Rules on $CURRENT_USER.org.tier ("my organization's items"). Directus
// reads the user's org.tier without permission checks before it reads
// (permissions/utils/fetch-dynamic-variable-data.js), so two users whose
// org.tier is equal meet the rule identically, as for a field of the user
// itself. The broker can only read those values as the service user, so a
// path is shared by only when the service user reads exactly what Directus
// does: every step a many-to-one with one related collection, and of each
// related collection every row's primary key and next field (a grant with
// no row filter: a filtered one would read some users' values as null, a
// wrong class). Changes of the related items change the users' values
// without any users.update: those events are access changes too
// (Watcher), and still delivered.

// pathStep is one related collection a user path passes: its primary key
// tells which item a user's value came from (so whose values an event of
// that collection changes).
type pathStep struct{ collection, pk string }

// serviceGrant is one read permission of a policy of the service user.
type serviceGrant struct {
	fields   []string
	filtered bool // a row filter: some rows may be hidden
}

// servicePerms are the service user's own read permissions, as rows
// (policy's grants by collection), when it can read them with their fields:
// /permissions/me answers the union of several policies' fields and rows,
// which can claim a field of every row that no single grant gives.
type servicePerms struct {
	admin    bool
	policies []string // the policies that apply to the service user
	grants   map[string][]serviceGrant
}

// reads reports whether one grant of the service user gives every row's
// fields of collection: only then are its reads of them Directus's own.
func (s *servicePerms) reads(collection string, fields []string) bool {
	if s == nil {
		return false
	}
	if s.admin {
		return true
	}
	for _, g := range s.grants[collection] {
		if !g.filtered && (slices.Contains(g.fields, "*") || !slices.ContainsFunc(fields, func(f string) bool { return !slices.Contains(g.fields, f) })) {
			return true
		}
	}
	return false
}

// emptyRule reports whether a permission's rule lets every row through.
func emptyRule(raw json.RawMessage) bool {
	s := strings.TrimSpace(string(raw))
	return s == "" || s == "null" || s == "{}"
}

// fieldsOf reads a permission's fields (a list, or a comma-separated
// string as older versions store it).
func fieldsOf(raw json.RawMessage) []string {
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return strings.Split(s, ",")
	}
	return nil
}

// resolveUserPath returns the related collections path (a dotted user
// field, "org.tier") passes, when the service user reads every step as
// Directus does; false otherwise (the users whose rules use it read apart).
func (m *accessModel) resolveUserPath(path string, svc *servicePerms) ([]pathStep, bool) {
	segs := strings.Split(path, ".")
	if len(segs) < 2 || !svc.reads("directus_users", segs[:1]) {
		return nil, false
	}
	var steps []pathStep
	coll := "directus_users"
	for i, seg := range segs[:len(segs)-1] {
		targets := m.schema.m2o[coll][seg]
		if len(targets) != 1 || targets[0] == anyCollection || m.schema.fields[coll][seg] != fieldKey {
			return nil, false // not a many-to-one (a list, a many-to-any, unseen)
		}
		next := targets[0]
		pk := m.schema.pk[next]
		if pk == "" || !svc.reads(next, []string{pk, segs[i+1]}) {
			return nil, false
		}
		steps = append(steps, pathStep{collection: next, pk: pk})
		coll = next
	}
	return steps, true
}

// pathCollection reports whether collection is passed by a user path some
// rule shares by: its item changes change users' values.
func (m *accessModel) pathCollection(collection string) bool { return m.pathColls[collection] }

// pathsCovered reports whether a Flow sends the item events of every
// collection the user paths among fields pass: without them a change of a
// related item (an organization's tier) would go unnoticed, and users
// would keep the class of their old values.
func (c Classifier) pathsCovered(m *accessModel, fields []string) bool {
	cov := c.coverage.Load()
	for _, f := range fields {
		for _, s := range m.userPaths[f] {
			if cov == nil || !cov.covers(s.collection) {
				return false
			}
		}
	}
	return true
}

// UserPathGrants reads the schema (with an admin token) and returns what
// the service user must read, with no row filter, for rules on the user
// paths among fields to share by value: of directus_users the paths' first
// segments, and of each related collection its primary key and the next
// segment. A path that is not a chain of many-to-ones with one related
// collection each is left out: the model reads its users apart anyway.
func UserPathGrants(ctx context.Context, c *Client, token string, fields []string) (map[string][]string, error) {
	var paths []string
	for _, f := range fields {
		if strings.Contains(f, ".") {
			paths = append(paths, f)
		}
	}
	if len(paths) == 0 {
		return nil, nil
	}
	schema, err := loadSchema(ctx, c, token, nil)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	add := func(coll string, fs ...string) {
		for _, f := range fs {
			if !slices.Contains(out[coll], f) {
				out[coll] = append(out[coll], f)
			}
		}
	}
	for _, p := range paths {
		segs := strings.Split(p, ".")
		grants := map[string][]string{"directus_users": {segs[0]}}
		coll, ok := "directus_users", true
		for i, seg := range segs[:len(segs)-1] {
			targets := schema.m2o[coll][seg]
			if len(targets) != 1 || targets[0] == anyCollection || schema.fields[coll][seg] != fieldKey || schema.pk[targets[0]] == "" {
				ok = false
				break
			}
			coll = targets[0]
			grants[coll] = append(grants[coll], schema.pk[coll], segs[i+1])
		}
		if ok {
			for coll, fs := range grants {
				add(coll, fs...)
			}
		}
	}
	return out, nil
}
