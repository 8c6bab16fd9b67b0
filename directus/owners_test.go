package directus

import "testing"

func TestOwnerFieldOf(t *testing.T) {
	cases := []struct {
		rule  string
		field string
		ok    bool
	}{
		{`{"owner":{"_eq":"$CURRENT_USER"}}`, "owner", true},
		{`{"user_created":{"_eq":"$CURRENT_USER.id"}}`, "user_created", true},
		{`{"owner":{"_in":["$CURRENT_USER"]}}`, "owner", true},
		{`{"_and":[{"owner":{"_eq":"$CURRENT_USER"}}]}`, "owner", true},
		// Anything more is not an owner rule: a second condition, an _or, a
		// path through a relation, another operator, another variable.
		{`{"_and":[{"owner":{"_eq":"$CURRENT_USER"}},{"status":{"_eq":"x"}}]}`, "", false},
		{`{"_or":[{"owner":{"_eq":"$CURRENT_USER"}}]}`, "", false},
		{`{"owner":{"id":{"_eq":"$CURRENT_USER"}}}`, "", false},
		{`{"owner":{"_neq":"$CURRENT_USER"}}`, "", false},
		{`{"owner":{"_in":["$CURRENT_USER","x"]}}`, "", false},
		{`{"team":{"_eq":"$CURRENT_USER.team"}}`, "", false},
		{`{"owner":{"_eq":"$CURRENT_USER"},"status":{"_eq":"x"}}`, "", false},
		{`{}`, "", false},
		{`null`, "", false},
	}
	for _, c := range cases {
		f, ok := ownerFieldOf([]byte(c.rule))
		if f != c.field || ok != c.ok {
			t.Errorf("%s: %q %v, want %q %v", c.rule, f, ok, c.field, c.ok)
		}
	}
}

// A user is an owner reader of a collection only when every one of its
// policies' read rules there is the owner rule on one field.
func TestOwnerOf(t *testing.T) {
	m := newAccessModel(nil)
	m.addOwnerRule("own", "c", []byte(`{"owner":{"_eq":"$CURRENT_USER"}}`))
	m.addOwnerRule("own2", "c", []byte(`{"owner":{"_eq":"$CURRENT_USER.id"}}`))
	m.addOwnerRule("other", "c", []byte(`{"author":{"_eq":"$CURRENT_USER"}}`))
	m.addOwnerRule("pub", "c", []byte(`{"status":{"_eq":"published"}}`))
	m.addOwnerRule("dup", "c", []byte(`{"owner":{"_eq":"$CURRENT_USER"}}`))
	m.addOwnerRule("dup", "c", []byte(`{"owner":{"_eq":"$CURRENT_USER"}}`))
	cases := []struct {
		policies []string
		admin    bool
		ok       bool
	}{
		{[]string{"own"}, false, true},
		{[]string{"own", "own2"}, false, true},
		{[]string{"own", "unrelated"}, false, true},
		{[]string{"own", "other"}, false, false},
		{[]string{"own", "pub"}, false, false},
		{[]string{"dup"}, false, false},
		{[]string{"own"}, true, false},
		{[]string{"unrelated"}, false, false},
	}
	for _, c := range cases {
		if _, _, ok := m.ownerOf(access{policies: c.policies, admin: c.admin}, "c"); ok != c.ok {
			t.Errorf("%v admin=%v: %v, want %v", c.policies, c.admin, ok, c.ok)
		}
	}
}

func TestOwnerRuleOfTeams(t *testing.T) {
	if f, u, ok := ownerRuleOf([]byte(`{"team":{"_eq":"$CURRENT_USER.team"}}`)); f != "team" || u != "team" || !ok {
		t.Fatalf("%q %q %v", f, u, ok)
	}
	// A path through the user's many-to-ones is a team rule too (the
	// class is shared only where the model proves it reads the path).
	if f, u, ok := ownerRuleOf([]byte(`{"tier":{"_eq":"$CURRENT_USER.org.tier"}}`)); f != "tier" || u != "org.tier" || !ok {
		t.Fatalf("path: %q %q %v", f, u, ok)
	}
	for _, r := range []string{`{"team":{"_in":["$CURRENT_USER.team"]}}`, `{"team":{"_eq":"$CURRENT_USER.token"}}`, `{"team":{"_eq":"$CURRENT_USER.a..b"}}`,
		`{"team":{"_eq":"$CURRENT_USER.id.x"}}`, `{"team":{"_eq":"$CURRENT_USER.a.b.c.d.e"}}`, `{"team":{"_eq":"$CURRENT_USER.token.x"}}`} {
		if _, _, ok := ownerRuleOf([]byte(r)); ok {
			t.Errorf("%s taken for a team rule", r)
		}
	}
	for _, c := range []struct {
		item, value string
		may         bool
	}{{`"a"`, `"a"`, true}, {`"a"`, `"b"`, false}, {`3`, `4`, false}, {`3`, `"3"`, true}, {``, `"a"`, true}} {
		if mayMatch(c.item, c.value) != c.may {
			t.Errorf("mayMatch(%s, %s) = %v", c.item, c.value, !c.may)
		}
	}
}

// Mixed rules: an owner part beside user-independent parts, in one _or or
// across policies, on one field; anything else is not split.
func TestMixedOf(t *testing.T) {
	if f, ok := ownerPartOf([]byte(`{"_or":[{"status":{"_eq":"published"}},{"owner":{"_eq":"$CURRENT_USER"}}]}`)); f != "owner" || !ok {
		t.Fatalf("%q %v", f, ok)
	}
	for _, r := range []string{
		`{"_or":[{"status":{"_eq":"published"}},{"team":{"_eq":"$CURRENT_USER.team"}}]}`,
		`{"_or":[{"owner":{"_eq":"$CURRENT_USER"}},{"editor":{"_eq":"$CURRENT_USER"}}]}`,
		`{"_or":[{"owner":{"_eq":"$CURRENT_USER"}}]}`,
		`{"_and":[{"status":{"_eq":"published"}},{"owner":{"_eq":"$CURRENT_USER"}}]}`,
	} {
		if _, ok := ownerPartOf([]byte(r)); ok {
			t.Errorf("%s taken for a mixed rule", r)
		}
	}
	m := newAccessModel(nil)
	m.addOwnerRule("or", "c", []byte(`{"_or":[{"status":{"_eq":"published"}},{"owner":{"_eq":"$CURRENT_USER"}}]}`))
	m.addOwnerRule("own", "c", []byte(`{"owner":{"_eq":"$CURRENT_USER"}}`))
	m.addOwnerRule("pub", "c", []byte(`{"status":{"_eq":"published"}}`))
	m.addOwnerRule("role", "c", []byte(`{"role":{"_eq":"$CURRENT_ROLE"}}`))
	m.addOwnerRule("author", "c", []byte(`{"author":{"_eq":"$CURRENT_USER"}}`))
	m.addOwnerRule("team", "c", []byte(`{"team":{"_eq":"$CURRENT_USER.team"}}`))
	for _, c := range []struct {
		policies []string
		ok       bool
	}{
		{[]string{"or"}, true},
		{[]string{"own", "pub"}, true},
		{[]string{"own", "role"}, true},
		{[]string{"or", "own"}, true},
		{[]string{"own"}, false}, // an owner rule alone: ownerOf's
		{[]string{"pub"}, false},
		{[]string{"own", "author", "pub"}, false},
		{[]string{"own", "team", "pub"}, false},
	} {
		if _, ok := m.mixedOf(access{policies: c.policies}, "c"); ok != c.ok {
			t.Errorf("%v: %v, want %v", c.policies, ok, c.ok)
		}
	}
}

// The owner classes filed are bounded: past the bound a class is not
// filed, and its reads are made as without the shortcut (Readable cannot
// tell), never wrongly filtered.
func TestOwnerClassesBounded(t *testing.T) {
	defer func(n int64) { maxOwnerClasses = n }(maxOwnerClasses)
	maxOwnerClasses = 2
	roles := map[string]string{}
	for _, u := range []string{"o1", "o2", "o3", "o4"} {
		roles[u] = "owners"
	}
	c := testClasses(roles)
	m := c.model.Load()
	m.ownerRule = map[string]map[string]string{}
	m.addOwnerRule("p-own", "articles", []byte(`{"user_created":{"_eq":"$CURRENT_USER"}}`))
	var classes []string
	for _, u := range []string{"o1", "o2", "o3", "o4"} {
		classes = append(classes, c.Class(cred("t-"+u, Identity{UserID: u}), "articles", nil))
	}
	if n := c.ownerCount.Load(); n != 2 {
		t.Fatalf("%d owner classes filed, want the bound (2)", n)
	}
	if _, ok := c.owners.Load(classes[2] + "\x00articles"); ok {
		t.Fatal("a class past the bound was filed")
	}
	if _, ok := c.Readable(t.Context(), classes[2], "articles", []string{"1"}, "b1"); ok {
		t.Fatal("Readable answered for a class that is not filed: its keys must all be read")
	}
	// Classifying a filed one again does not count it twice.
	c.Class(cred("t-o1", Identity{UserID: "o1"}), "articles", nil)
	if n := c.ownerCount.Load(); n != 2 {
		t.Fatalf("%d after classifying a filed class again", n)
	}
}
