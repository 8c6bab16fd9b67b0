package handlers_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// The outside cases of issue 18 on the real Directus 11.17.4, with the
// broker reading the model as the service user flow install makes: every
// frame a subscriber receives is what its own REST read with the same query
// answers at that moment, and nothing arrives where that read shows
// nothing.

// querySub is a subscriber with a query of its own.
type querySub struct {
	name, token string
	query       map[string]any
	c           *brokertest.Client
}

// queryMatrix compares every subscriber's frames with its REST reads.
type queryMatrix struct {
	t    *testing.T
	b    *brokertest.Broker
	coll string
	subs []*querySub
	step int
}

func (m *queryMatrix) subscribe(name, token string, query map[string]any) *querySub {
	m.t.Helper()
	s := &querySub{name: name, token: token, query: query, c: brokertest.Dial(m.t, m.b.WSURL, token)}
	s.c.Send(m.t, map[string]any{"type": "subscribe", "collection": m.coll, "uid": "s", "query": query})
	if f := s.c.Next(m.t); f["type"] != "SUBSCRIBED" {
		m.t.Fatalf("%s: subscribe answered %v", name, f)
	}
	m.subs = append(m.subs, s)
	return s
}

// rest is what token reads of item id with query now (nil: nothing).
func (m *queryMatrix) rest(token, id string, query map[string]any) map[string]any {
	m.t.Helper()
	v, err := directus.QueryValues(query)
	if err != nil {
		m.t.Fatal(err)
	}
	var out struct {
		Data map[string]any `json:"data"`
	}
	status, err := dx.Do(m.t.Context(), token, http.MethodGet, "/items/"+m.coll+"/"+id+"?"+v.Encode(), nil, &out)
	if status == http.StatusForbidden || status == http.StatusNotFound {
		return nil
	}
	if err != nil {
		m.t.Fatal(err)
	}
	return out.Data
}

// post sends the Flow's body for a create or update of id and checks every
// subscriber against its own REST read.
func (m *queryMatrix) post(action, id string) {
	m.t.Helper()
	m.step++
	body := fmt.Sprintf(`{"event":"%s.items.%s","payload":{},"keys":["%s"],"collection":"%s"}`, m.coll, action, id, m.coll)
	if status, out := postWebhook(m.t, m.b, body); status != http.StatusAccepted {
		m.t.Fatalf("webhook: %d %s", status, out)
	}
	m.b.Settle(m.t)
	for _, s := range m.subs {
		want := m.rest(s.token, id, s.query)
		if want == nil {
			s.c.Quiet(m.t, fmt.Sprintf("%s-%d", s.name, m.step))
			continue
		}
		f := s.c.Next(m.t)
		data, _ := f["data"].([]any)
		if f["action"] != action || len(data) != 1 || !reflect.DeepEqual(data[0], want) {
			raw, _ := json.Marshal(f)
			got, _ := json.Marshal(want)
			m.t.Fatalf("step %d %s: received %s; its own REST read answers %s", m.step, s.name, raw, got)
		}
	}
}

// relWorld is issue 18.1 and 18.4's schema: items with a many-to-one ref
// into refs (owner rule) and a one-to-many tasks from tasks (owner rule).
func relWorld(t *testing.T, prefix string, sync bool) (w *world, items, refs, tasks, role string) {
	items, refs, tasks = prefix+"_items", prefix+"_refs", prefix+"_tasks"
	pk := map[string]any{"field": "id", "type": "integer", "schema": map[string]any{"is_primary_key": true, "has_auto_increment": true}}
	str := func(name string) map[string]any { return map[string]any{"field": name, "type": "string"} }
	admin(t, http.MethodPost, "/collections", map[string]any{"collection": refs, "schema": map[string]any{}, "meta": map[string]any{}, "fields": []any{pk, str("title"), str("owner")}})
	admin(t, http.MethodPost, "/collections", map[string]any{"collection": items, "schema": map[string]any{}, "meta": map[string]any{}, "fields": []any{pk, str("title"), str("status"),
		map[string]any{"field": "ref", "type": "integer", "meta": map[string]any{"special": nil}, "schema": map[string]any{}}}})
	admin(t, http.MethodPost, "/relations", map[string]any{"collection": items, "field": "ref", "related_collection": refs})
	admin(t, http.MethodPost, "/collections", map[string]any{"collection": tasks, "schema": map[string]any{}, "meta": map[string]any{}, "fields": []any{pk, str("title"), str("owner"),
		map[string]any{"field": "item", "type": "integer", "schema": map[string]any{}}}})
	admin(t, http.MethodPost, "/fields/"+items, map[string]any{"field": "tasks", "type": "alias", "meta": map[string]any{"special": []string{"o2m"}}})
	admin(t, http.MethodPost, "/relations", map[string]any{"collection": tasks, "field": "item", "related_collection": items, "meta": map[string]any{"one_field": "tasks"},
		"schema": map[string]any{"on_delete": "SET NULL"}})
	w = &world{t: t, prefix: prefix, coll: items}
	role = w.role("readers")
	p := w.policy("items full, refs and tasks owned")
	w.read(p, nil, nil)
	own := map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}}
	admin(t, http.MethodPost, "/permissions", map[string]any{"policy": p, "collection": refs, "action": "read", "fields": []string{"*"}, "permissions": own})
	admin(t, http.MethodPost, "/permissions", map[string]any{"policy": p, "collection": tasks, "action": "read", "fields": []string{"*"}, "permissions": own})
	w.attachRole(role, p)
	if sync {
		// As an operator runs flow install again after a schema change.
		requireServiceToken(t)
		c, err := directus.NewClient(dx.URL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := flow.SyncServicePolicy(t.Context(), c, adminToken); err != nil {
			t.Fatal(err)
		}
	}
	return w, items, refs, tasks, role
}

// TestFailClosedRelations: issue 18.1 and 18.4. Two users of one role
// whose rule on the related collections is owner = $CURRENT_USER: through
// the many-to-one, the one-to-many's keys, a count and a filter on it,
// neither receives what only the other may read; with the schema granted
// to the service user (flow install after the schema change) and without.
func TestFailClosedRelations(t *testing.T) {
	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprint("schema_granted=", sync), func(t *testing.T) {
			cfg := brokerConfig(t)
			cfg.DirectusServiceToken = requireServiceToken(t)
			prefix := "fcr"
			if sync {
				prefix = "fcs"
			}
			w, items, refs, tasks, role := relWorld(t, prefix, sync)
			aID, aTok := w.user("a", role)
			_, bTok := w.user("b", role)
			b := brokertest.Start(t, cfg)
			m := &queryMatrix{t: t, b: b, coll: items}
			queries := []map[string]any{
				{"fields": []any{"id", "title", "ref.title"}},
				{},
				{"fields": []any{"id", "count(tasks)"}},
				{"fields": []any{"id", "title"}, "filter": map[string]any{"tasks": map[string]any{"_some": map[string]any{"title": map[string]any{"_contains": "A-"}}}}},
			}
			for i, q := range queries {
				m.subscribe(fmt.Sprint("a", i), aTok, q)
				m.subscribe(fmt.Sprint("b", i), bTok, q)
			}
			ref := admin(t, http.MethodPost, "/items/"+refs, map[string]any{"title": "REF-A", "owner": aID})
			id := admin(t, http.MethodPost, "/items/"+items, map[string]any{"title": "t", "ref": ref})
			admin(t, http.MethodPost, "/items/"+tasks, map[string]any{"title": "A-task", "owner": aID, "item": id})
			m.post("create", id)
			admin(t, http.MethodPatch, "/items/"+items+"/"+id, map[string]any{"title": "t2"})
			m.post("update", id)
		})
	}
}

// TestRelationalQuerySharesWithSchemaGrant: issue 18.3. With the schema
// granted, users of a role without per-user rules share one read per event
// for a relational query (and the service user reads no item: its rule
// matches none).
func TestRelationalQuerySharesWithSchemaGrant(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	w, items, refs, _, _ := relWorld(t, "fcg", true)
	role := w.role("plain")
	p := w.policy("items and refs, no user rule")
	w.read(p, nil, nil)
	admin(t, http.MethodPost, "/permissions", map[string]any{"policy": p, "collection": refs, "action": "read", "fields": []string{"*"}, "permissions": map[string]any{}})
	w.attachRole(role, p)
	b := brokertest.Start(t, cfg)
	m := &queryMatrix{t: t, b: b, coll: items}
	query := map[string]any{"fields": []any{"id", "title", "ref.title"}}
	for i := range 10 {
		_, tok := w.user(fmt.Sprint("p", i), role)
		m.subscribe(fmt.Sprint("p", i), tok, query)
	}
	ref := admin(t, http.MethodPost, "/items/"+refs, map[string]any{"title": "R"})
	id := admin(t, http.MethodPost, "/items/"+items, map[string]any{"title": "t", "ref": ref})
	before := b.Broker.Metrics().Reads
	m.post("create", id)
	if n := b.Broker.Metrics().Reads - before; n != 1 {
		t.Fatalf("%d reads for 10 users of one role with a relational query, want 1", n)
	}
	// The target's size: 1,000 users of the role, one read per event.
	users := make([]map[string]any, 990)
	for i := range users {
		users[i] = map[string]any{"email": fmt.Sprintf("fcg-k%d@example.com", i), "role": role, "token": fmt.Sprintf("fcg-k%d-token", i)}
	}
	admin(t, http.MethodPost, "/users", users)
	var many []*brokertest.Client
	for i := range users {
		c := brokertest.Dial(t, b.WSURL, fmt.Sprintf("fcg-k%d-token", i))
		c.Send(t, map[string]any{"type": "subscribe", "collection": items, "uid": "s", "query": query})
		many = append(many, c)
	}
	for _, c := range many {
		if f := c.Next(t); f["type"] != "SUBSCRIBED" {
			t.Fatalf("subscribe: %v", f)
		}
	}
	admin(t, http.MethodPatch, "/items/"+items+"/"+id, map[string]any{"title": "t2"})
	before = b.Broker.Metrics().Reads
	m.post("update", id)
	want := m.rest(m.subs[0].token, id, query)
	for _, c := range many {
		f := c.Next(t)
		if data, _ := f["data"].([]any); f["action"] != "update" || len(data) != 1 || !reflect.DeepEqual(data[0], want) {
			t.Fatalf("one of 1,000: %v, want %v", f, want)
		}
	}
	if n := b.Broker.Metrics().Reads - before; n != 1 {
		t.Fatalf("%d reads for 1,000 users of one role with a relational query, want 1", n)
	}
	t.Logf("1,000 users of one role, query %v: %d read per event", query["fields"], b.Broker.Metrics().Reads-before)
	var none struct {
		Data []any `json:"data"`
	}
	if _, err := dx.Do(t.Context(), cfg.DirectusServiceToken, http.MethodGet, "/items/"+items, nil, &none); err != nil || len(none.Data) != 0 {
		t.Fatalf("the service user reads items: %v %v", none.Data, err)
	}
}

// TestForgedStaticTokenClaims: issue 18.2. A user whose static token is
// shaped like a JWT claiming another role (the Administrator's, or a role
// that reads secrets) receives only what its own REST reads answer.
func TestForgedStaticTokenClaims(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	w := newWorld(t, "forge")
	pubRole, secRole := w.role("public level"), w.role("secret level")
	pPub, pSec := w.policy("public level"), w.policy("secret level")
	w.read(pPub, nil, map[string]any{"status": map[string]any{"_eq": "public"}})
	w.read(pSec, nil, nil)
	w.attachRole(pubRole, pPub)
	w.attachRole(secRole, pSec)
	_, secTok := w.user("sec", secRole)
	var roles struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(t.Context(), adminToken, http.MethodGet, "/roles?filter[name][_eq]=Administrator&fields=id", nil, &roles); err != nil || len(roles.Data) == 0 {
		t.Fatalf("administrator role: %v", err)
	}
	forge := func(name, role string) string {
		tok := "x." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"directus","role":"`+role+`"}`)) + ".x"
		id, _ := w.user(name, pubRole)
		admin(t, http.MethodPatch, "/users/"+id, map[string]any{"token": tok})
		return tok
	}
	asSec := forge("forger1", secRole)
	asAdmin := forge("forger2", roles.Data[0].ID)
	b := brokertest.Start(t, cfg)
	m := &matrix{t: t, b: b, w: w}
	m.subscribe("sec", secTok)
	m.subscribe("forged-secret-role", asSec)
	m.subscribe("forged-admin-role", asAdmin)
	id := w.item(map[string]any{"title": "s", "status": "secret", "secret": topSecret})
	m.post("create", id, map[string]any{"title": "s"})
	pub := w.item(map[string]any{"title": "p", "status": "public"})
	m.post("create", pub, map[string]any{"title": "p"})
	// A collection the forger's role may not read at all: no subscription.
	c := brokertest.Dial(t, b.WSURL, asAdmin)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "private", "uid": "p"})
	if f := c.Next(t); f["type"] == "SUBSCRIBED" {
		t.Fatalf("a forged Administrator claim subscribed to a collection its role cannot read: %v", f)
	}
}

// restFrom is a REST read of item id as token from the local address ip
// (nil: nothing).
func restFrom(t *testing.T, ip, token, coll, id string) map[string]any {
	t.Helper()
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	hc := &http.Client{Transport: &http.Transport{DialContext: nd.DialContext}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, dx.URL+"/items/"+coll+"/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	var out struct {
		Data map[string]any `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Data
}

// TestIPAccessFollowsTheClient: issue 18.6. A policy with ip_access
// listing the broker's address (127.0.0.1) grants a user nothing through
// the broker that the same user's REST read from its own address
// (127.0.0.2) is refused, while a user at 127.0.0.1 gets what it reads.
func TestIPAccessFollowsTheClient(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	w := newWorld(t, "ipacc")
	role := w.role("office")
	base, office := w.policy("public items"), w.policy("office network")
	w.read(base, nil, map[string]any{"status": map[string]any{"_eq": "public"}})
	w.read(office, nil, nil)
	admin(t, http.MethodPatch, "/policies/"+office, map[string]any{"ip_access": []string{"127.0.0.1"}})
	w.attachRole(role, base)
	w.attachRole(role, office)
	_, away := w.user("away", role)
	_, here := w.user("here", role)
	b := brokertest.Start(t, cfg)
	subscribe := func(c *brokertest.Client) {
		c.Send(t, map[string]any{"type": "subscribe", "collection": w.coll, "uid": "s"})
		if f := c.Next(t); f["type"] != "SUBSCRIBED" {
			t.Fatalf("subscribe: %v", f)
		}
	}
	cAway := brokertest.DialFrom(t, b.WSURL, away, "127.0.0.2")
	cHere := brokertest.DialFrom(t, b.WSURL, here, "127.0.0.1")
	subscribe(cAway)
	subscribe(cHere)
	id := w.item(map[string]any{"title": "office only", "status": "internal", "secret": topSecret})
	if restFrom(t, "127.0.0.2", away, w.coll, id) != nil || restFrom(t, "127.0.0.1", here, w.coll, id) == nil {
		t.Fatal("Directus does not apply ip_access as this test assumes")
	}
	body := fmt.Sprintf(`{"event":"%s.items.create","payload":{},"key":%s,"collection":"%s"}`, w.coll, id, w.coll)
	if status, out := postWebhook(t, b, body); status != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", status, out)
	}
	b.Settle(t)
	if f := cHere.Next(t); f["action"] != "create" {
		t.Fatalf("the subscriber at 127.0.0.1: %v", f)
	}
	cAway.Quiet(t, "away")
}
