package directus

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// The schema of these tests: articles has author (many-to-one to
// directus_users) and comments (one-to-many from comments.article);
// comments has owner (many-to-one to directus_users); pages has a
// many-to-any field "blocks" (to text and images).
//
// The service user sees every field of these collections (flow install's
// grant), as fields lists; "hidden" has a relation "secretref" the service
// user cannot see (its metadata says many-to-one, the relation is not
// listed), "tasks" an alias whose relation is hidden, "vague" a many-to-any
// without allowed collections; "opaque" is a collection whose fields it
// does not see.
func testSchema() *schemaGraph {
	g := &schemaGraph{
		m2o: map[string]map[string][]string{
			"articles": {"author": {"directus_users"}},
			"comments": {"article": {"articles"}, "owner": {"directus_users"}},
			"pages":    {"blocks": {"text", "images"}},
			"vague":    {"item": {anyCollection}},
		},
		o2m:    map[string]map[string]string{"articles": {"comments": "comments"}},
		fields: map[string]map[string]fieldKind{},
		known:  map[string]bool{},
	}
	add := func(coll string, fields map[string]fieldKind) {
		g.fields[coll] = fields
		g.known[coll] = true
	}
	add("articles", map[string]fieldKind{"id": fieldPlain, "title": fieldPlain, "status": fieldPlain, "author": fieldKey, "comments": fieldAlias})
	add("comments", map[string]fieldKind{"id": fieldPlain, "text": fieldPlain, "article": fieldKey, "owner": fieldKey})
	add("directus_users", map[string]fieldKind{"id": fieldPlain, "first_name": fieldPlain, "last_name": fieldPlain, "email": fieldPlain, "name": fieldPlain})
	add("pages", map[string]fieldKind{"id": fieldPlain, "blocks": fieldAlias})
	add("text", map[string]fieldKind{"id": fieldPlain, "body": fieldPlain})
	add("images", map[string]fieldKind{"id": fieldPlain, "url": fieldPlain})
	add("hidden", map[string]fieldKind{"id": fieldPlain, "title": fieldPlain, "secretref": fieldKey, "tasks": fieldAlias})
	add("vague", map[string]fieldKind{"id": fieldPlain, "item": fieldKey})
	g.fields["opaque"] = map[string]fieldKind{"id": fieldPlain}
	return g
}

func q(s string) map[string]any {
	var m map[string]any
	if s != "" {
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			panic(err)
		}
	}
	return m
}

func TestReach(t *testing.T) {
	tests := []struct {
		coll, query string
		want        string // sorted touched collections, or "ALL"
	}{
		// The default fields (*) read the one-to-many comments (their keys,
		// filtered by comments' rules) but the author only as a raw key.
		{"articles", ``, "articles,comments"},
		{"articles", `{"fields":["id","title"]}`, "articles"},
		{"articles", `{"fields":["author"]}`, "articles"},
		{"articles", `{"fields":["author.first_name"]}`, "articles,directus_users"},
		{"articles", `{"fields":["comments.owner.email"]}`, "articles,comments,directus_users"},
		{"articles", `{"fields":["*.*"]}`, "articles,comments,directus_users"},
		{"articles", `{"fields":["count(comments)"]}`, "articles,comments"},
		{"articles", `{"fields":["id"],"filter":{"author":{"_eq":"x"}}}`, "articles"},
		{"articles", `{"fields":["id"],"filter":{"author":{"email":{"_contains":"@"}}}}`, "articles,directus_users"},
		{"articles", `{"fields":["id"],"filter":{"_and":[{"comments":{"_some":{"owner":{"id":{"_eq":"x"}}}}}]}}`, "articles,comments,directus_users"},
		{"articles", `{"fields":["id"],"sort":["-author.last_name"]}`, "articles,directus_users"},
		{"articles", `{"fields":["id"],"deep":{"comments":{"_filter":{"owner":{"name":{"_eq":"x"}}}}}}`, "articles,comments,directus_users"},
		// A many-to-any read for one collection still reads the keys of the
		// others, each shown only to who may read it.
		{"pages", `{"fields":["blocks:text.body"]}`, "images,pages,text"},
		{"pages", `{"fields":["blocks:text"]}`, "images,pages,text"},
		{"pages", `{"fields":["blocks"]}`, "pages"},
		{"pages", `{"fields":["blocks.*"]}`, "images,pages,text"},
		{"articles", `{"fields":["id"],"unknown_key":1}`, "ALL"},
		{"articles", `{"fields":["id"],"filter":{"$FOLLOW(comments,article)":{"_nnull":true}}}`, "ALL"},
		{"articles", `{"fields":["$FOLLOW(x)"]}`, "ALL"},
		// Fail closed: whatever reach cannot prove reaches everything.
		{"opaque", `{"fields":["id"]}`, "ALL"},                        // its fields are not all visible
		{"hidden", `{"fields":["id","title","secretref"]}`, "hidden"}, // a key read bare
		{"hidden", `{"fields":["id","secretref.title"]}`, "ALL"},      // through a hidden relation
		{"hidden", `{"fields":["tasks"]}`, "ALL"},                     // an alias whose relation is hidden
		{"hidden", ``, "ALL"},                                         // * reads that alias too
		{"hidden", `{"fields":["count(tasks)"]}`, "ALL"},              // and so does a count of it
		{"hidden", `{"fields":["id"],"filter":{"tasks":{"_some":{"title":{"_contains":"x"}}}}}`, "ALL"},
		{"hidden", `{"fields":["id"],"filter":{"secretref":{"title":{"_eq":"x"}}}}`, "ALL"},
		{"hidden", `{"fields":["id"],"filter":{"secretref":{"_eq":"x"}}}`, "hidden"}, // compares the key
		{"hidden", `{"fields":["id"],"sort":["secretref.title"]}`, "ALL"},
		{"hidden", `{"fields":["nosuchfield"]}`, "ALL"},
		{"articles", `{"fields":["id","title.x"]}`, "ALL"}, // a path through a plain field
		{"articles", `{"alias":{"c":"comments"},"fields":["c.owner.email"]}`, "articles,comments,directus_users"},
		{"articles", `{"alias":{"c":"comments"},"fields":["id"],"filter":{"c":{"_some":{"owner":{"email":{"_eq":"x"}}}}}}`, "articles,comments,directus_users"},
		{"articles", `{"alias":{"c":"comments.owner"},"fields":["c"]}`, "ALL"},
		{"articles", `{"fields":["c.owner.email"]}`, "ALL"}, // c is no field without the alias
		{"articles", `{"fields":["id"],"deep":{"comments":{"_alias":{"o":"owner"},"_filter":{}}}}`, "ALL"},
		{"articles", `{"fields":["id"],"deep":{"title":{"_filter":{}}}}`, "ALL"},
		{"articles", `{"fields":["id"],"deep":{"_filter":{}}}`, "ALL"},
		{"vague", `{"fields":["item.secret"]}`, "ALL"}, // a many-to-any that can point anywhere
		{"vague", `{"fields":["item"]}`, "vague"},
		{"articles", `{"fields":["id"],"version":"draft"}`, "articles,directus_versions"},
	}
	g := testSchema()
	for _, tc := range tests {
		touched, all := g.reach(tc.coll, q(tc.query))
		got := "ALL"
		if !all {
			var list []string
			for c := range touched {
				list = append(list, c)
			}
			sort.Strings(list)
			got = strings.Join(list, ",")
		}
		if got != tc.want {
			t.Errorf("%s %s: reach %s, want %s", tc.coll, tc.query, got, tc.want)
		}
	}
}

// testModel: role "editors" (policy p-read: full read of articles and
// comments) and "owners" (policy p-own: articles whose user_created is the
// user); user "u-extra" also holds p-extra directly; "admins" has p-admin;
// the public holds p-public; "frontend" holds p-app (app access) and
// p-read.
func testModel() *accessModel {
	return &accessModel{
		parent: map[string]string{"sub-editors": "editors"},
		rolePolicies: map[string][]string{
			"editors": {"p-read"}, "owners": {"p-own"}, "admins": {"p-admin"}, "frontend": {"p-read", "p-app"},
		},
		userPolicies: map[string][]string{"u-extra": {"p-extra"}},
		public:       []string{"p-public"},
		admin:        map[string]bool{"p-admin": true},
		app:          map[string]bool{"p-app": true},
		ip:           map[string]bool{},
		userRule:     map[string]map[string]userDep{"p-own": {"articles": {identity: true}}},
		schema:       testSchema(),
	}
}

func testClasses(roles map[string]string) Classifier {
	c := NewPermissions(nil, "service", nil, zerolog.Nop()).Classifier()
	c.model.Store(testModel())
	for u, r := range roles {
		r := r
		c.users.roles[u] = &r
	}
	return c
}

func cred(token string, id Identity) broker.Credentials {
	return broker.Credentials{Token: token, Principal: id}
}

// Two credentials share a class exactly when Directus answers their reads
// alike: the table names pairs that must share and pairs that must not.
func TestClassKeys(t *testing.T) {
	c := testClasses(map[string]string{
		"u1": "editors", "u2": "editors", "u-extra": "editors", "o1": "owners", "o2": "owners",
		"a1": "admins", "a2": "admins", "f1": "frontend", "f2": "frontend", "s1": "sub-editors",
	})
	static := func(user string) broker.Credentials { return cred("tok-"+user, Identity{UserID: user}) }
	jwt := func(user, role string) broker.Credentials {
		return cred("jwt-"+user+role, Identity{UserID: user, JWT: true, Role: role})
	}
	cases := []struct {
		name  string
		a, b  broker.Credentials
		coll  string
		query string
		share bool
	}{
		{"same role, full read", static("u1"), static("u2"), "articles", ``, true},
		{"a user's JWT and static token, same role", static("u1"), jwt("u1", "editors"), "articles", ``, true},
		{"a JWT still carrying the old role", static("u1"), jwt("u1", "owners"), "articles", ``, false},
		{"policy attached to the user", static("u1"), static("u-extra"), "articles", ``, false},
		{"owner rule", static("o1"), static("o2"), "articles", ``, false},
		{"owner rule on a collection the read does not touch", static("o1"), static("o2"), "comments", `{"fields":["id","text"]}`, true},
		{"child role differs from parent", static("u1"), static("s1"), "articles", ``, false},
		{"admins", static("a1"), static("a2"), "articles", ``, true},
		{"admins whose query names the user", static("a1"), static("a2"), "articles", `{"filter":{"user_created":{"_eq":"$CURRENT_USER"}}}`, false},
		{"same role, query names the user", static("u1"), static("u2"), "articles", `{"filter":{"user_created":{"_eq":"$CURRENT_USER"}}}`, false},
		{"app access, read stays in articles", static("f1"), static("f2"), "articles", `{"fields":["id","author"]}`, true},
		{"app access, read reaches directus_users", static("f1"), static("f2"), "articles", `{"fields":["author.first_name"]}`, false},
		{"public", cred("", Identity{}), cred("", Identity{}), "articles", ``, true},
		{"public and a user", cred("", Identity{}), static("u1"), "articles", ``, false},
		{"shares", cred("s-a", Identity{JWT: true, Share: "sh1"}), cred("s-b", Identity{JWT: true, Share: "sh1"}), "articles", ``, true},
		{"unknown role: one class per user", static("u1"), static("unknown"), "articles", ``, false},
	}
	for _, tc := range cases {
		ka := c.Class(tc.a, tc.coll, q(tc.query))
		kb := c.Class(tc.b, tc.coll, q(tc.query))
		if (ka == kb) != tc.share {
			t.Errorf("%s: classes %q and %q, want shared=%v", tc.name, ka, kb, tc.share)
		}
	}
}

// Without a model (no service token, or it could not be read) every user
// has a class of its own: its tabs and refreshed JWTs share, other users
// never.
func TestClassFallbackPerUser(t *testing.T) {
	c := NewPermissions(nil, "", nil, zerolog.Nop()).Classifier()
	a1 := c.Class(cred("t1", Identity{UserID: "a"}), "articles", nil)
	a2 := c.Class(cred("t2", Identity{UserID: "a"}), "articles", nil)
	b := c.Class(cred("t3", Identity{UserID: "b"}), "articles", nil)
	j1 := c.Class(cred("j1", Identity{UserID: "a", JWT: true, Role: "r"}), "articles", nil)
	j2 := c.Class(cred("j2", Identity{UserID: "a", JWT: true, Role: "r"}), "articles", nil)
	if a1 != a2 || j1 != j2 || a1 == b || a1 == j1 {
		t.Fatalf("classes %q %q %q %q %q", a1, a2, b, j1, j2)
	}
	if strings.Contains(a1, "t1") {
		t.Fatalf("a class key must not carry the token: %q", a1)
	}
}

// A rule naming only fields of the user ($CURRENT_USER.team) shares by the
// fields' values (issue 21.1): users of one team share, of two teams not;
// a value not read (the user not loaded, the field not granted to the
// service user, a list as an alias field reads) is a class per user.
func TestClassKeysByUserFieldValues(t *testing.T) {
	m := testModel()
	m.rolePolicies["teams"] = []string{"p-team"}
	m.userRule["p-team"] = map[string]userDep{"articles": {fields: []string{"team"}}}
	m.userFields = map[string]bool{"team": true}
	c := NewPermissions(nil, "service", nil, zerolog.Nop()).Classifier()
	c.model.Store(m)
	c.users.setFields([]string{"team"}, nil)
	for u, team := range map[string]string{"x1": `"x"`, "x2": `"x"`, "y1": `"y"`, "n1": `null`, "n2": `null`, "l1": `[1,2]`, "l2": `[1,2]`} {
		c.users.storeLocked(u, userRecord{"id": json.RawMessage(`"` + u + `"`), "role": json.RawMessage(`"teams"`), "team": json.RawMessage(team)})
	}
	role := "teams"
	c.users.roles["unread"] = &role // the role known, the value not
	static := func(user string) broker.Credentials { return cred("tok-"+user, Identity{UserID: user}) }
	cases := []struct {
		name  string
		a, b  string
		query string
		share bool
	}{
		{"one team", "x1", "x2", ``, true},
		{"two teams", "x1", "y1", ``, false},
		{"no team, both", "n1", "n2", ``, true},
		{"no team and a team", "n1", "x1", ``, false},
		{"a list value", "l1", "l2", ``, false},
		{"a value not read", "unread", "x1", ``, false},
		{"a filter of its own does not lift the rule", "x1", "y1", `{"fields":["id"],"filter":{"id":{"_eq":1}}}`, false},
	}
	for _, tc := range cases {
		ka := c.Class(static(tc.a), "articles", q(tc.query))
		kb := c.Class(static(tc.b), "articles", q(tc.query))
		if (ka == kb) != tc.share {
			t.Errorf("%s: classes %q and %q, want shared=%v", tc.name, ka, kb, tc.share)
		}
	}
	if c.Class(static("x1"), "comments", nil) != c.Class(static("y1"), "comments", nil) {
		t.Error("a collection without the rule: the values must not split the class")
	}
	// The field not granted to the service user: per user.
	m2 := *m
	m2.userFields = map[string]bool{}
	c.model.Store(&m2)
	if c.Class(static("x1"), "articles", nil) == c.Class(static("x2"), "articles", nil) {
		t.Error("shared by a field the service user cannot read")
	}
}
