package directus

import (
	"reflect"
	"testing"
)

func TestUserDepOf(t *testing.T) {
	cases := []struct {
		rule     string
		identity bool
		fields   []string
	}{
		{`{}`, false, nil},
		{`{"status":{"_eq":"published"}}`, false, nil},
		{`{"owner":{"_eq":"$CURRENT_USER"}}`, true, nil},
		{`{"owner":{"_eq":"$CURRENT_USER.id"}}`, true, nil},
		{`{"team":{"_eq":"$CURRENT_USER.team"}}`, false, []string{"team"}},
		{`{"_and":[{"team":{"_eq":"$CURRENT_USER.team"}},{"org":{"_in":["$CURRENT_USER.org"]}}]}`, false, []string{"org", "team"}},
		{`{"_or":[{"team":{"_eq":"$CURRENT_USER.team"}},{"owner":{"_eq":"$CURRENT_USER"}}]}`, true, []string{"team"}},
		// A path through a relation of the user: its value is not a field of
		// theirs the broker reads; so is a function.
		// A path through relations of the user is a value to share by (the
		// model checks it can be read); a function, an id path or one too
		// deep is not.
		{`{"org":{"_eq":"$CURRENT_USER.team.org"}}`, false, []string{"team.org"}},
		{`{"org":{"_eq":"$CURRENT_USER.a.b.c.d.e"}}`, true, nil},
		{`{"org":{"_eq":"$CURRENT_USER.id.x"}}`, true, nil},
		{`{"org":{"_eq":"$CURRENT_USER.token.x"}}`, true, nil},
		{`{"org":{"_eq":"$CURRENT_USER.team..org"}}`, true, nil},
		{`{"y":{"_eq":"$CURRENT_USER.year(date_created)"}}`, true, nil},
		// Mentioned inside another string, or as a key: cannot tell.
		{`{"x":{"_contains":"x $CURRENT_USER.team"}}`, true, nil},
		{`{"$CURRENT_USER.team":{"_eq":1}}`, true, nil},
		{`{"bad json $CURRENT_USER.team`, true, nil},
		{`{"k":{"_eq":"$CURRENT_USER.password"}}`, true, nil},
	}
	for _, c := range cases {
		d := userDepOf([]byte(c.rule))
		if d.identity != c.identity || !reflect.DeepEqual(d.fields, c.fields) {
			t.Errorf("%s: identity %v fields %v, want %v %v", c.rule, d.identity, d.fields, c.identity, c.fields)
		}
	}
}

// A rule on a field Directus conceals is per user: the service user would
// read the same mask for everyone.
func TestUserDepConcealed(t *testing.T) {
	if d := userDepOf([]byte(`{"k":{"_eq":"$CURRENT_USER.token"}}`)); !d.identity {
		t.Fatalf("token: %+v", d)
	}
	l := &roleLoader{roles: map[string]*string{}}
	l.setFields([]string{"code"}, nil)
	l.storeLocked("u", userRecord{"id": []byte(`"u"`), "code": []byte(concealed)})
	if _, ok := l.valuesOf("u", []string{"code"}); ok {
		t.Fatal("a concealed value shared by")
	}
}

// A user path is read with each related item's key: the value is shared
// by, the items it passed are remembered (an event of one regroups the
// user), and a user without the related item reads apart.
func TestUserPathValues(t *testing.T) {
	l := &roleLoader{roles: map[string]*string{}}
	l.setFields([]string{"org.tier"}, map[string][]pathStep{"org.tier": {{collection: "orgs", pk: "id"}}})
	if got := l.fieldList(); got != "id,role,org.id,org.tier" {
		t.Fatalf("fields %s", got)
	}
	l.storeLocked("u1", userRecord{"id": []byte(`"u1"`), "org": []byte(`{"id":7,"tier":"gold"}`)})
	l.storeLocked("u2", userRecord{"id": []byte(`"u2"`), "org": []byte(`null`)})
	if v, ok := l.valuesOf("u1", []string{"org.tier"}); !ok || v != `org.tier="gold"` {
		t.Fatalf("u1: %q %v", v, ok)
	}
	if _, ok := l.valuesOf("u2", []string{"org.tier"}); ok {
		t.Fatal("a user without an org shared by a value")
	}
	if !l.refers("u1", "orgs", []string{"7"}) || l.refers("u1", "orgs", []string{"8"}) {
		t.Fatal("refs of u1")
	}
	if got := l.itemsMoved("orgs", []string{"7"}, false); len(got) != 1 || got[0] != "u1" {
		t.Fatalf("moved %v", got)
	}
	if _, ok := l.valuesOf("u1", []string{"org.tier"}); ok {
		t.Fatal("u1's value kept after its org changed")
	}
}

// A path is shared by only where the service user reads every step as
// Directus does; every other case reads apart (fail closed).
func TestResolveUserPathFailsClosed(t *testing.T) {
	m := newAccessModel(&schemaGraph{
		m2o:    map[string]map[string][]string{"directus_users": {"org": {"orgs"}, "any": {anyCollection}}},
		fields: map[string]map[string]fieldKind{"directus_users": {"org": fieldKey, "any": fieldKey, "tags": fieldAlias}},
		pk:     map[string]string{"orgs": "id"},
	})
	full := &servicePerms{grants: map[string][]serviceGrant{
		"directus_users": {{fields: []string{"id", "role", "org", "any", "tags"}}},
		"orgs":           {{fields: []string{"id", "tier"}}},
	}}
	if steps, ok := m.resolveUserPath("org.tier", full); !ok || len(steps) != 1 || steps[0] != (pathStep{"orgs", "id"}) {
		t.Fatalf("org.tier: %v %v", steps, ok)
	}
	split := &servicePerms{grants: map[string][]serviceGrant{
		"directus_users": full.grants["directus_users"],
		// The union covers id and tier, no single grant gives tier of every row.
		"orgs": {{fields: []string{"id"}}, {fields: []string{"*"}, filtered: true}},
	}}
	for name, c := range map[string]struct {
		path string
		svc  *servicePerms
	}{
		"grants unreadable":             {"org.tier", nil},
		"tier only where a filter lets": {"org.tier", split},
		"not granted":                   {"org.name", full},
		"many-to-any":                   {"any.tier", full},
		"a list":                        {"tags.tier", full},
	} {
		if _, ok := m.resolveUserPath(c.path, c.svc); ok {
			t.Errorf("%s: %s shared by", name, c.path)
		}
	}
}
