package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// The access-class tests: subscribers share reads by access class, and
// every frame is compared with what that subscriber's own token reads
// through REST at that moment. They run against the shared Directus 11.17.4
// with roles, policies and users of their own, and a broker reading the
// permission model with the least-privilege service user that flow
// install --create-service-token makes.

var (
	serviceOnce  sync.Once
	serviceToken string
	serviceErr   error
)

func requireServiceToken(t *testing.T) string {
	t.Helper()
	requireDirectus(t)
	serviceOnce.Do(func() {
		c, err := directus.NewClient(dx.URL, 0)
		if err != nil {
			serviceErr = err
			return
		}
		serviceToken, serviceErr = flow.EnsureServiceUser(context.Background(), c, adminToken)
	})
	if serviceErr != nil {
		t.Fatal(serviceErr)
	}
	return serviceToken
}

// admin is a REST call as admin that must succeed; it returns data.id.
func admin(t *testing.T, method, path string, body any) string {
	t.Helper()
	var out struct {
		Data json.RawMessage `json:"data"`
	}
	if _, err := dx.Do(t.Context(), adminToken, method, path, body, &out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	var rec struct {
		ID any `json:"id"`
	}
	_ = json.Unmarshal(out.Data, &rec)
	if rec.ID == nil {
		return ""
	}
	return fmt.Sprint(rec.ID)
}

// world is the roles, policies and users of one test, named with its
// prefix, on one collection.
type world struct {
	t      *testing.T
	prefix string
	coll   string
}

func newWorld(t *testing.T, prefix string) *world {
	return itemsWorld(t, prefix, "title", "status", "owner", "secret")
}

// itemsWorld is a world whose collection prefix_items has an integer key
// and the string fields named.
func itemsWorld(t *testing.T, prefix string, fields ...string) *world {
	w := &world{t: t, prefix: prefix, coll: prefix + "_items"}
	all := []map[string]any{{"field": "id", "type": "integer", "schema": map[string]any{"is_primary_key": true, "has_auto_increment": true}}}
	for _, f := range fields {
		all = append(all, map[string]any{"field": f, "type": "string"})
	}
	admin(t, http.MethodPost, "/collections", map[string]any{"collection": w.coll, "schema": map[string]any{}, "meta": map[string]any{}, "fields": all})
	return w
}

func (w *world) role(name string) string {
	return admin(w.t, http.MethodPost, "/roles", map[string]any{"name": w.prefix + " " + name})
}

func (w *world) policy(name string) string {
	return admin(w.t, http.MethodPost, "/policies", map[string]any{"name": w.prefix + " " + name, "app_access": false, "admin_access": false})
}

// read grants policy read on the collection (fields nil = all, filter nil
// = every item) and returns the permission's id.
func (w *world) read(policy string, fields []string, filter map[string]any) string {
	if fields == nil {
		fields = []string{"*"}
	}
	if filter == nil {
		filter = map[string]any{}
	}
	return admin(w.t, http.MethodPost, "/permissions", map[string]any{"policy": policy, "collection": w.coll, "action": "read", "fields": fields, "permissions": filter})
}

func (w *world) attachRole(role, policy string) string {
	return admin(w.t, http.MethodPost, "/access", map[string]any{"role": role, "policy": policy})
}

func (w *world) attachUser(user, policy string) string {
	return admin(w.t, http.MethodPost, "/access", map[string]any{"user": user, "policy": policy})
}

// user makes a user of role with a static token; it returns the user's id.
func (w *world) user(name, role string) (id, token string) {
	token = w.prefix + "-" + name + "-token"
	id = admin(w.t, http.MethodPost, "/users", map[string]any{"email": w.prefix + "-" + name + "@example.com", "password": "user-password", "role": role, "token": token})
	return id, token
}

// item creates an item as admin; it returns its id.
func (w *world) item(fields map[string]any) string {
	return admin(w.t, http.MethodPost, "/items/"+w.coll, fields)
}

// subscriber is one socket of the matrix.
type subscriber struct {
	name  string
	token string
	c     *brokertest.Client
	seen  map[string]bool // item id → the latest frame showed it
}

// matrix posts events and checks every subscriber against REST.
type matrix struct {
	t    *testing.T
	b    *brokertest.Broker
	w    *world
	subs []*subscriber
	step int
}

func (m *matrix) subscribe(name, token string) *subscriber {
	s := &subscriber{name: name, token: token, c: brokertest.Dial(m.t, m.b.WSURL, token), seen: map[string]bool{}}
	s.c.Send(m.t, map[string]any{"type": "subscribe", "collection": m.w.coll, "uid": "s"})
	if f := s.c.Next(m.t); f["type"] != "SUBSCRIBED" {
		m.t.Fatalf("%s: subscribe answered %v", name, f)
	}
	m.subs = append(m.subs, s)
	return s
}

// restRead is what token reads of item id now (nil: nothing).
func (m *matrix) restRead(token, id string) map[string]any {
	var out struct {
		Data map[string]any `json:"data"`
	}
	status, err := dx.Do(m.t.Context(), token, http.MethodGet, "/items/"+m.w.coll+"/"+id, nil, &out)
	if status == http.StatusForbidden || status == http.StatusNotFound {
		return nil
	}
	if err != nil {
		m.t.Fatal(err)
	}
	return out.Data
}

// post sends the webhook body a Flow would send for action on id, waits
// until it is dispatched and checks every subscriber: a create or update
// shows exactly what the subscriber's token reads now (nothing when it reads
// nothing); a delete reaches those whose latest frame showed the item.
func (m *matrix) post(action, id string, payload map[string]any) (eventID string) {
	m.t.Helper()
	m.step++
	p, _ := json.Marshal(payload)
	body := fmt.Sprintf(`{"event":"%s.items.%s","payload":%s,"keys":["%s"],"collection":"%s"}`, m.w.coll, action, p, id, m.w.coll)
	if action == "delete" {
		body = fmt.Sprintf(`{"event":"%s.items.delete","payload":["%s"],"keys":["%s"],"collection":"%s"}`, m.w.coll, id, id, m.w.coll)
	}
	status, out := postWebhook(m.t, m.b, body)
	if status != 202 {
		m.t.Fatalf("webhook: %d %s", status, out)
	}
	var answer struct {
		IDs []string `json:"ids"`
	}
	_ = json.Unmarshal([]byte(out), &answer)
	m.b.Settle(m.t)
	for _, s := range m.subs {
		marker := fmt.Sprintf("%s-%d", s.name, m.step)
		if action == "delete" {
			if !s.seen[id] {
				s.c.Quiet(m.t, marker)
				continue
			}
			f := s.c.Next(m.t)
			if f["action"] != "delete" || fmt.Sprint(f["keys"]) != "["+id+"]" {
				m.t.Fatalf("step %d %s: want the delete of %s, got %v", m.step, s.name, id, f)
			}
			delete(s.seen, id)
			continue
		}
		want := m.restRead(s.token, id)
		if want == nil {
			s.c.Quiet(m.t, marker)
			s.seen[id] = false
			continue
		}
		f := s.c.Next(m.t)
		data, _ := f["data"].([]any)
		if f["action"] != action || len(data) != 1 || !reflect.DeepEqual(data[0], want) {
			raw, _ := json.Marshal(f)
			m.t.Fatalf("step %d %s: got %s, its token reads %v", m.step, s.name, raw, want)
		}
		s.seen[id] = true
	}
	return answer.IDs[0]
}

// access posts the event a Flow sends for a change of a system collection.
func (m *matrix) access(event, coll string, keys ...string) {
	m.t.Helper()
	k, _ := json.Marshal(keys)
	body := fmt.Sprintf(`{"event":"%s","payload":{},"keys":%s,"collection":"%s"}`, event, k, coll)
	if status, out := postWebhook(m.t, m.b, body); status != 202 {
		m.t.Fatalf("access webhook: %d %s", status, out)
	}
}

func (m *matrix) reads() int64 { return m.b.Broker.Metrics().Reads }

// TestClassesOwnerRule: two users of one role whose rule is owner =
// $CURRENT_USER never receive each other's items — creates, updates,
// deletes, the init snapshot and a resume.
func TestClassesOwnerRule(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	w := newWorld(t, "own")
	role := w.role("owners")
	p := w.policy("owner rule")
	w.read(p, nil, map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}})
	w.attachRole(role, p)
	aID, aTok := w.user("a", role)
	bID, bTok := w.user("b", role)
	b := brokertest.Start(t, cfg)
	m := &matrix{t: t, b: b, w: w}
	m.subscribe("a", aTok)
	m.subscribe("b", bTok)

	itemA := w.item(map[string]any{"title": "a's", "owner": aID})
	start := m.post("create", itemA, map[string]any{"title": "a's"})
	itemB := w.item(map[string]any{"title": "b's", "owner": bID})
	m.post("create", itemB, map[string]any{"title": "b's"})
	admin(t, http.MethodPatch, "/items/"+w.coll+"/"+itemA, map[string]any{"title": "a's 2"})
	m.post("update", itemA, map[string]any{"title": "a's 2"})
	if m.b.Broker.Metrics().Groups != 2 {
		t.Fatalf("%d groups: the owner rule makes a class per user", m.b.Broker.Metrics().Groups)
	}

	// init and resume, as b: only b's items.
	c := brokertest.Dial(t, b.WSURL, bTok)
	c.Send(t, map[string]any{"type": "subscribe", "collection": w.coll, "uid": "i", "init": true})
	c.NextOfType(t, "SUBSCRIBED")
	init := c.NextOfType(t, "SUBSCRIPTION")
	raw, _ := json.Marshal(init["data"])
	if init["action"] != "init" || strings.Contains(string(raw), "a's") || !strings.Contains(string(raw), "b's") {
		t.Fatalf("b's init: %s", raw)
	}
	admin(t, http.MethodDelete, "/items/"+w.coll+"/"+itemA, nil)
	m.post("delete", itemA, nil)
	// A resume after a's create replays b's create only: a's update (b's
	// read shows nothing) and a's delete (withheld by the delete rule) not.
	r := brokertest.Dial(t, b.WSURL, bTok)
	r.Send(t, map[string]any{"type": "subscribe", "collection": w.coll, "uid": "r", "since": start})
	r.NextOfType(t, "SUBSCRIBED")
	f := r.Next(t)
	if f["action"] != "create" || fmt.Sprint(f["keys"]) != "["+itemB+"]" {
		t.Fatalf("resume: %v", f)
	}
	r.Quiet(t, "resume-b")
}

// TestClassesSharedReads: admins share one class, the public shares one,
// and 40 subscribers of 20 users in 2 roles cost exactly 2 reads per event
// (3 groups with the admins, 4 with the public).
func TestClassesSharedReads(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	cfg.WebsocketPublic = true
	w := newWorld(t, "shared")
	full, pub := w.role("full"), w.role("published")
	pFull, pPub := w.policy("full"), w.policy("published")
	w.read(pFull, nil, nil)
	w.read(pPub, []string{"id", "title", "status"}, map[string]any{"status": map[string]any{"_eq": "published"}})
	w.attachRole(full, pFull)
	w.attachRole(pub, pPub)
	if err := dx.SetPublicRead(t.Context(), w.coll, []string{"id", "title"}, nil); err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, cfg)
	m := &matrix{t: t, b: b, w: w}
	for i := range 20 {
		role := full
		if i%2 == 1 {
			role = pub
		}
		_, tok := w.user(fmt.Sprint("u", i), role)
		m.subscribe(fmt.Sprint("u", i, "a"), tok)
		m.subscribe(fmt.Sprint("u", i, "b"), tok)
	}
	id := w.item(map[string]any{"title": "t", "status": "published", "secret": topSecret})
	before := m.reads()
	m.post("create", id, map[string]any{"title": "t"})
	if n := m.reads() - before; n != 2 {
		t.Fatalf("%d reads for 40 subscribers of 20 users in 2 roles, want 2", n)
	}
	// Admins: the fixture's admin and a second admin user share a class.
	adminRole := ""
	var roles struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(t.Context(), adminToken, http.MethodGet, "/roles?filter[name][_eq]=Administrator&fields=id", nil, &roles); err == nil && len(roles.Data) > 0 {
		adminRole = roles.Data[0].ID
	}
	_, admin2 := w.user("admin2", adminRole)
	m.subscribe("admin", adminToken)
	m.subscribe("admin2", admin2)
	m.subscribe("public1", "")
	m.subscribe("public2", "")
	admin(t, http.MethodPatch, "/items/"+w.coll+"/"+id, map[string]any{"title": "t2"})
	before = m.reads()
	m.post("update", id, map[string]any{"title": "t2"})
	if n := m.reads() - before; n != 4 {
		t.Fatalf("%d reads, want 4 (full, published, admins, public)", n)
	}
}

// TestClassesAccessChanges: a user moved to another role while subscribed,
// a policy removed from a user, a rule edited from full access to
// status = published, a rule edited to add $CURRENT_USER: from the first
// item event after the change reached the broker (the event the Flow posts
// for it), each subscriber gets exactly its new view.
func TestClassesAccessChanges(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	w := newWorld(t, "changes")
	r, s := w.role("R"), w.role("S")
	pR, pS, pExtra := w.policy("R"), w.policy("S"), w.policy("extra")
	ruleR := w.read(pR, []string{"id", "title", "status", "owner"}, nil)
	w.read(pS, []string{"id", "title", "status"}, map[string]any{"status": map[string]any{"_eq": "published"}})
	w.read(pExtra, []string{"id", "title", "status", "owner", "secret"}, nil)
	w.attachRole(r, pR)
	w.attachRole(s, pS)
	_, aTok := w.user("a", r)
	bID, bTok := w.user("b", r)
	cID, cTok := w.user("c", r)
	xID, xTok := w.user("x", r)
	extra := w.attachUser(xID, pExtra) // x alone also reads the secret
	b := brokertest.Start(t, cfg)
	m := &matrix{t: t, b: b, w: w}
	for _, u := range []struct{ name, tok string }{{"a", aTok}, {"b", bTok}, {"c", cTok}, {"x", xTok}} {
		m.subscribe(u.name, u.tok)
	}
	item := w.item(map[string]any{"title": "draft", "status": "draft", "secret": topSecret})
	m.post("create", item, map[string]any{"title": "draft"})
	if g := b.Broker.Metrics().Groups; g != 2 {
		t.Fatalf("%d groups: a, b, c share one class, x (an extra policy) has its own", g)
	}
	update := func(fields map[string]any) {
		t.Helper()
		admin(t, http.MethodPatch, "/items/"+w.coll+"/"+item, fields)
		m.post("update", item, fields)
	}

	t.Run("user moved to another role", func(t *testing.T) {
		admin(t, http.MethodPatch, "/users/"+bID, map[string]any{"role": s})
		m.access("users.update", "directus_users", bID)
		update(map[string]any{"title": "b moved"}) // b (S: published only) sees nothing
	})
	t.Run("policy removed from a user", func(t *testing.T) {
		admin(t, http.MethodDelete, "/access/"+extra, nil)
		m.access("access.delete", "directus_access", extra)
		update(map[string]any{"title": "no extra"}) // x no longer sees the secret
		if g := b.Broker.Metrics().Groups; g != 2 {
			t.Fatalf("%d groups: x joins a and c; b is in S", g)
		}
	})
	t.Run("rule edited from full to published", func(t *testing.T) {
		admin(t, http.MethodPatch, "/permissions/"+ruleR, map[string]any{"permissions": map[string]any{"status": map[string]any{"_eq": "published"}}})
		m.access("permissions.update", "directus_permissions", ruleR)
		update(map[string]any{"title": "still draft"}) // nobody sees a draft now
		update(map[string]any{"status": "published"})  // everyone sees it
	})
	t.Run("rule edited to add $CURRENT_USER", func(t *testing.T) {
		admin(t, http.MethodPatch, "/permissions/"+ruleR, map[string]any{"permissions": map[string]any{"_and": []any{
			map[string]any{"status": map[string]any{"_eq": "published"}}, map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}},
		}}})
		m.access("permissions.update", "directus_permissions", ruleR)
		mine := w.item(map[string]any{"title": "c's", "status": "published", "owner": cID})
		m.post("create", mine, map[string]any{"title": "c's"}) // only c
		if g := b.Broker.Metrics().Groups; g != 4 {
			t.Fatalf("%d groups: a, c, x read apart now, b in S", g)
		}
	})
}

// TestClassesReaderLeaves: the member whose token the class reads with
// disconnects mid-stream; the next events still reach every other member,
// correctly filtered.
func TestClassesReaderLeaves(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	w := newWorld(t, "leaves")
	role := w.role("R")
	p := w.policy("R")
	w.read(p, []string{"id", "title"}, nil)
	w.attachRole(role, p)
	b := brokertest.Start(t, cfg)
	m := &matrix{t: t, b: b, w: w}
	for i := range 4 {
		_, tok := w.user(fmt.Sprint("u", i), role)
		m.subscribe(fmt.Sprint("u", i), tok)
	}
	item := w.item(map[string]any{"title": "t0", "secret": topSecret})
	m.post("create", item, map[string]any{"title": "t0"})
	for i := range 3 {
		// Close one socket after the other: whichever the class read with
		// goes at some point, and the read moves to a member still there.
		m.subs[0].c.Conn.Close()
		m.subs = m.subs[1:]
		b.Settle(t)
		admin(t, http.MethodPatch, "/items/"+w.coll+"/"+item, map[string]any{"title": fmt.Sprint("t", i+1)})
		before := m.reads()
		m.post("update", item, map[string]any{"title": fmt.Sprint("t", i+1)})
		if n := m.reads() - before; n != 1 {
			t.Fatalf("%d reads after a member left, want 1", n)
		}
	}
}

// TestClassesWithoutServiceToken: without a service token every user is
// read for apart — two users of one role make two reads — but one user's
// sockets share.
func TestClassesWithoutServiceToken(t *testing.T) {
	cfg := brokerConfig(t)
	w := newWorld(t, "noservice")
	role := w.role("R")
	p := w.policy("R")
	w.read(p, []string{"id", "title"}, nil)
	w.attachRole(role, p)
	b := brokertest.Start(t, cfg)
	m := &matrix{t: t, b: b, w: w}
	_, t1 := w.user("u1", role)
	_, t2 := w.user("u2", role)
	m.subscribe("u1a", t1)
	m.subscribe("u1b", t1)
	m.subscribe("u2", t2)
	item := w.item(map[string]any{"title": "t"})
	before := m.reads()
	m.post("create", item, map[string]any{"title": "t"})
	if n := m.reads() - before; n != 2 {
		t.Fatalf("%d reads, want 2 (one per user)", n)
	}
}
