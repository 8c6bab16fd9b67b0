package directus

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// The tests of failing closed: whatever the broker cannot establish
// completely makes a subscription's class its own, never shared.

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// A static token can be shaped like a JWT: Directus then looks it up as a
// whole, so its claims mean nothing (issue 18.2).
func TestIdentityOfIsDirectusJWT(t *testing.T) {
	header := b64(`{"alg":"HS256","typ":"JWT"}`)
	payload := b64(`{"iss":"directus","role":"r-admin","id":"u1"}`)
	cases := []struct {
		name  string
		token string
		jwt   bool
	}{
		{"a real shape", header + "." + payload + ".c2ln", true},
		{"an empty signature", header + "." + payload + ".", true},
		{"a header that is not JSON", "x." + payload + ".x", false},
		{"a header that is JSON false", b64("false") + "." + payload + ".x", false},
		{"a header that is JSON 0", b64("0") + "." + payload + ".x", false},
		{"a header that is JSON 1", b64("1") + "." + payload + ".x", true},
		{"another issuer", header + "." + b64(`{"iss":"other","role":"r"}`) + ".x", false},
		{"an issuer that is not a string", header + "." + b64(`{"iss":["directus"]}`) + ".x", false},
		{"four parts", header + "." + payload + ".x.y", false},
		{"a character outside base64url", header + "." + payload + ".a+b", false},
		{"payload not JSON", header + "." + b64(`{"iss":"directus"`) + ".x", false},
		{"padding", header + "=." + payload + ".x", false},
	}
	for _, tc := range cases {
		if got := identityOf(tc.token).JWT; got != tc.jwt {
			t.Errorf("%s: JWT=%v, want %v", tc.name, got, tc.jwt)
		}
	}
}

// A hand-made static token with another role's claim, or a share claim,
// never chooses a class: only the role the database gives its user does.
func TestForgedClaimsDoNotChooseAClass(t *testing.T) {
	c := testClasses(map[string]string{"o1": "owners", "o2": "owners", "a1": "admins", "e1": "editors", "e2": "editors"})
	forged := "x." + b64(`{"iss":"directus","role":"admins","share":"sh1"}`) + ".x"
	id := identityOf(forged)
	id.UserID = "o1" // what /users/me answers for it: Directus found the user by the token
	k := c.Class(cred(forged, id), "articles", nil)
	admin := c.Class(cred("tok-a1", Identity{UserID: "a1"}), "articles", nil)
	share := c.Class(cred("s", Identity{JWT: true, Share: "sh1"}), "articles", nil)
	if k == admin || k == share || strings.HasPrefix(k, "class:") {
		t.Fatalf("forged token's class %q (admins %q, share %q): it must be the user's own", k, admin, share)
	}
	// The same forgery against a user whose real role shares: still apart,
	// since the claim is not the user's role.
	forgedE := "x." + b64(`{"iss":"directus","role":"admins"}`) + ".x"
	idE := identityOf(forgedE) // a static token to Directus: the claims are only read
	idE.UserID = "e1"
	k1 := c.Class(cred(forgedE, idE), "articles", nil)
	k2 := c.Class(cred("tok-e2", Identity{UserID: "e2"}), "articles", nil)
	if k1 == k2 {
		t.Fatalf("a token claiming another role shares %q with its role's users", k1)
	}
	// A share claim inside a user's verified JWT: a user token, not a share.
	u := Identity{UserID: "e1", JWT: true, Role: "editors", Share: "sh1"}
	if c.Class(cred("jwt", u), "articles", nil) == share {
		t.Fatal("a user's token joined a share's class")
	}
	if got := c.PerUser()[reasonRoleClaim]; got < 2 {
		t.Fatalf("per-user classes for role claims counted %d times, want ≥ 2", got)
	}
}

// A JWT's role is shared only while it is the user's role in the model.
func TestJWTRoleMustMatchUsersRole(t *testing.T) {
	c := testClasses(map[string]string{"u1": "owners", "u2": "editors"})
	stale := c.Class(cred("j1", Identity{UserID: "u1", JWT: true, Role: "editors"}), "articles", nil)
	fresh := c.Class(cred("t2", Identity{UserID: "u2"}), "articles", nil)
	if stale == fresh {
		t.Fatalf("a JWT carrying the editors role of a user now in owners shares %q", stale)
	}
	unknown := c.Class(cred("j3", Identity{UserID: "u3", JWT: true, Role: "editors"}), "articles", nil)
	if unknown == fresh {
		t.Fatal("a JWT of a user whose role is not known shares")
	}
}

// A policy with ip_access, a version read: per user (issue 18.3 and 18.6).
func TestIPAccessAndVersionArePerUser(t *testing.T) {
	c := testClasses(map[string]string{"e1": "editors", "e2": "editors", "i1": "ip", "i2": "ip"})
	m := testModel()
	m.rolePolicies["ip"] = []string{"p-read", "p-office"}
	m.ip["p-office"] = true
	c.model.Store(m)
	if a, b := c.Class(cred("i1", Identity{UserID: "i1"}), "articles", nil), c.Class(cred("i2", Identity{UserID: "i2"}), "articles", nil); a == b {
		t.Fatalf("users of a policy with ip_access share %q", a)
	}
	v := q(`{"version":"draft"}`)
	if a, b := c.Class(cred("e1", Identity{UserID: "e1"}), "articles", v), c.Class(cred("e2", Identity{UserID: "e2"}), "articles", v); a == b {
		t.Fatalf("version reads share %q", a)
	}
	if a, b := c.Class(cred("e1", Identity{UserID: "e1"}), "articles", nil), c.Class(cred("e2", Identity{UserID: "e2"}), "articles", nil); a != b {
		t.Fatalf("without version or ip_access the editors share: %q %q", a, b)
	}
}

// A relational query through a relation the service user cannot see is
// per user when the user's policies have any user rule (issue 18.1 and
// 18.4), shared when they have none.
func TestHiddenRelationsFailClosed(t *testing.T) {
	c := testClasses(map[string]string{"o1": "owners", "o2": "owners", "e1": "editors", "e2": "editors"})
	for _, query := range []string{
		`{"fields":["id","title","secretref.title"]}`, `{"fields":["tasks"]}`, ``, `{"fields":["count(tasks)"]}`,
		`{"fields":["id"],"filter":{"tasks":{"_some":{"title":{"_contains":"A"}}}}}`,
	} {
		a := c.Class(cred("o1", Identity{UserID: "o1"}), "hidden", q(query))
		b := c.Class(cred("o2", Identity{UserID: "o2"}), "hidden", q(query))
		if a == b {
			t.Errorf("%s: owners share %q through a hidden relation", query, a)
		}
		ea := c.Class(cred("e1", Identity{UserID: "e1"}), "hidden", q(query))
		eb := c.Class(cred("e2", Identity{UserID: "e2"}), "hidden", q(query))
		if ea != eb {
			t.Errorf("%s: editors (no user rule anywhere) read apart: %q %q", query, ea, eb)
		}
	}
}

// A failed reread of users' roles forgets them: the old role is never used
// again (issue 18.5).
func TestFailedRoleRereadForgets(t *testing.T) {
	var fail sync.Mutex
	failing := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fail.Lock()
		f := failing
		fail.Unlock()
		if f {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte(`{"data":[{"id":"u1","role":"strong"}]}`))
	}))
	defer srv.Close()
	client, err := NewClient(srv.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	l := &roleLoader{client: client, token: "svc", roles: map[string]*string{}}
	if err := l.load(t.Context(), []string{"u1"}, true); err != nil {
		t.Fatal(err)
	}
	if r, ok := l.role("u1"); !ok || r != "strong" {
		t.Fatalf("role %q %v", r, ok)
	}
	fail.Lock()
	failing = true
	fail.Unlock()
	if err := l.load(t.Context(), []string{"u1"}, true); err == nil {
		t.Fatal("the failed reread reported no error")
	}
	if r, ok := l.role("u1"); ok {
		t.Fatalf("after a failed reread the old role %q is still used", r)
	}
}

// fakeModel is a Directus answering the model's reads as a service user
// would see them, with a QUERY_LIMIT_MAX.
type fakeModel struct {
	limitMax int
	me       map[string]map[string]grant
	lists    map[string][]map[string]any
	rels     []map[string]any
	fields   []map[string]any
	reads    map[string]int
	mu       sync.Mutex
}

func (f *fakeModel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reads[r.URL.Path]++
	f.mu.Unlock()
	write := func(v any) { _ = json.NewEncoder(w).Encode(v) }
	path := strings.TrimPrefix(r.URL.Path, "/")
	switch path {
	case "permissions/me":
		write(map[string]any{"data": f.me})
		return
	case "relations":
		write(map[string]any{"data": f.rels})
		return
	case "fields":
		write(map[string]any{"data": f.fields})
		return
	}
	rows, ok := f.lists[path]
	if !ok {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit < 0 || limit > f.limitMax {
		limit = f.limitMax // Directus clamps, silently
	}
	offset, _ := strconv.Atoi(r.URL.Query().Get("offset"))
	page := []map[string]any{}
	for i := offset; i < len(rows) && i < offset+limit; i++ {
		page = append(page, rows[i])
	}
	body := map[string]any{"data": page}
	if r.URL.Query().Get("meta") == "filter_count" {
		body["meta"] = map[string]any{"filter_count": len(rows)}
	}
	write(body)
}

func newFakeModel() *fakeModel {
	full := func(fields ...string) map[string]grant {
		return map[string]grant{"read": {Access: "full", Fields: fields}}
	}
	f := &fakeModel{limitMax: 2, reads: map[string]int{},
		me: map[string]map[string]grant{
			"directus_roles": full("id", "parent"), "directus_access": full("id", "role", "user", "policy"),
			"directus_policies":    full("id", "admin_access", "app_access", "ip_access"),
			"directus_permissions": full("id", "policy", "collection", "action", "permissions"),
			"directus_users":       full("id", "role"), "directus_relations": full("*"),
			"items": {"read": {Access: "partial", Fields: []string{"*"}}},
		},
		lists: map[string][]map[string]any{
			"roles":    {{"id": "r1"}, {"id": "r2", "parent": "r1"}, {"id": "r3"}},
			"policies": {{"id": "p1"}, {"id": "p2"}, {"id": "p3", "ip_access": []string{"10.0.0.1"}}},
			"access": {{"id": 1, "role": "r1", "policy": "p1"}, {"id": 2, "user": "u1", "policy": "p2"},
				{"id": 3, "role": "r3", "user": "u9", "policy": "p3"}, {"id": 4, "policy": "p1"}},
			// The rule with $CURRENT_USER is the fifth: past one page.
			"permissions": {{"id": 1, "policy": "p1", "collection": "items"}, {"id": 2, "policy": "p1", "collection": "b"},
				{"id": 3, "policy": "p2", "collection": "c"}, {"id": 4, "policy": "p2", "collection": "d"},
				{"id": 5, "policy": "p3", "collection": "items", "permissions": map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}}}},
			"users": {{"id": "u1", "role": "r1"}, {"id": "u2", "role": "r1"}, {"id": "u9", "role": "r2"}},
		},
		fields: []map[string]any{{"collection": "items", "field": "id", "type": "integer"}, {"collection": "items", "field": "title", "type": "string"}},
	}
	return f
}

func loadFake(t *testing.T, f *fakeModel) (*accessModel, error) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	client, err := NewClient(srv.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return loadAccessModel(context.Background(), client, "svc")
}

// The loader pages past QUERY_LIMIT_MAX, files an access row with a role
// and a user under both, and reads ip_access (issue 18.9, 18.11).
func TestLoadAccessModel(t *testing.T) {
	m, err := loadFake(t, newFakeModel())
	if err != nil {
		t.Fatal(err)
	}
	if !m.userRule["p3"]["items"].identity {
		t.Fatalf("the rule past the first page was lost: %v", m.userRule)
	}
	if m.parent["r2"] != "r1" {
		t.Fatalf("parents %v", m.parent)
	}
	if got := m.accessOf("r2", "u9"); fmt.Sprint(got.policies) != "[p1 p3]" || !got.ip {
		t.Fatalf("u9 (role r2, named by a row with role r3): %+v, want p1 (r1 via parent) and p3 (the row names u9)", got)
	}
	if got := m.accessOf("r3", "u5"); fmt.Sprint(got.policies) != "[p3]" {
		t.Fatalf("a user of r3: %+v, want p3", got)
	}
	if got := m.accessOf("", ""); fmt.Sprint(got.policies) != "[p1]" {
		t.Fatalf("public: %+v", got)
	}
	if !m.schema.known["items"] || m.schema.known["directus_users"] {
		t.Fatalf("known collections %v: items (fields *) only", m.schema.known)
	}
}

// A row filter on the service policy, a missing field, a count that does
// not add up: the model is not used at all.
func TestLoadAccessModelIncomplete(t *testing.T) {
	cases := map[string]func(f *fakeModel){
		"row filter on permissions": func(f *fakeModel) {
			f.me["directus_permissions"] = map[string]grant{"read": {Access: "partial", Fields: []string{"*"}}}
		},
		"no read of access": func(f *fakeModel) { delete(f.me, "directus_access") },
		"ip_access not readable": func(f *fakeModel) {
			f.me["directus_policies"] = map[string]grant{"read": {Access: "full", Fields: []string{"id", "admin_access", "app_access"}}}
		},
	}
	for name, change := range cases {
		f := newFakeModel()
		change(f)
		if _, err := loadFake(t, f); !errors.Is(err, ErrModelIncomplete) {
			t.Errorf("%s: %v, want ErrModelIncomplete", name, err)
		}
	}
}

// Classes with a model that failed to load share nothing, and say why.
func TestClassesWithoutModelCountPerUser(t *testing.T) {
	c := NewPermissions(nil, "svc", nil, zerolog.Nop()).Classifier()
	a := c.Class(cred("t1", Identity{UserID: "a"}), "articles", nil)
	b := c.Class(cred("t2", Identity{UserID: "b"}), "articles", nil)
	if a == b || c.PerUser()[reasonNoModel] != 2 {
		t.Fatalf("%q %q %v", a, b, c.PerUser())
	}
}

// A change of users concerns only their tokens; the rest of the model all.
func TestConcerns(t *testing.T) {
	c := NewPermissions(nil, "svc", nil, zerolog.Nop()).Watcher()
	u1 := cred("t1", Identity{UserID: "u1"})
	users := broker.Event{Collection: "directus_users", Keys: []string{"u1"}}
	if !c.Concerns(users, u1) || c.Concerns(users, cred("t2", Identity{UserID: "u2"})) || c.Concerns(users, cred("", Identity{})) {
		t.Fatal("a change of u1 concerns u1 only")
	}
	if !c.Concerns(broker.Event{Collection: "directus_permissions", Keys: []string{"1"}}, cred("", Identity{})) {
		t.Fatal("a change of permissions concerns everyone")
	}
}
