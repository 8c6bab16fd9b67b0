package handlers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// The permission cases of the other endpoints as GraphQL selections, with
// the broker reading the model as the least-privilege service user flow
// install makes: every next message's data is what the subscriber's own
// REST read of the selected fields answers at that moment, and nothing
// arrives where that read shows nothing.

// gqlSub is one GraphQL subscriber: its document's data selection as the
// REST fields it must equal.
type gqlSub struct {
	name, token string
	fields      []string
	c           *gqlClient
}

type gqlMatrix struct {
	t    *testing.T
	b    *brokertest.Broker
	url  string
	coll string
	subs []*gqlSub
	step int
	// authFrame: public mode, where connection_init's token is ignored
	// (as Directus's): tokens come in Directus's auth message.
	authFrame bool
}

func (m *gqlMatrix) dial(token string) *gqlClient {
	m.t.Helper()
	c := dialGQL(m.t, m.url, token)
	if m.authFrame && token != "" {
		c.send(map[string]any{"type": "auth", "access_token": token})
		if f := c.next(); f["type"] != "auth" || f["status"] != "ok" {
			m.t.Fatalf("auth answered %v", f)
		}
	}
	return c
}

// subscribe opens a socket for token ("" the public role) with
// <coll>_mutated { key event data { <selection> } }.
func (m *gqlMatrix) subscribe(name, token, selection string, fields ...string) *gqlSub {
	m.t.Helper()
	s := &gqlSub{name: name, token: token, fields: fields, c: m.dial(token)}
	s.c.subscribe("s", fmt.Sprintf("subscription { %s_mutated { key event data { %s } } }", m.coll, selection))
	s.c.quiet("subscribed") // an error message would come before the pong
	m.subs = append(m.subs, s)
	return s
}

// refused: the selection is a GraphQL validation error for token.
func (m *gqlMatrix) refused(token, selection, want string) {
	m.t.Helper()
	c := m.dial(token)
	c.subscribe("x", fmt.Sprintf("subscription { %s_mutated { data { %s } } }", m.coll, selection))
	f := c.next()
	if f["type"] != "error" || !strings.Contains(fmt.Sprint(f["payload"]), want) {
		m.t.Fatalf("selecting %s: %v, want an error %q", selection, f, want)
	}
}

// rest is what token reads of item id's fields now (nil: nothing).
func (m *gqlMatrix) rest(token, id string, fields []string) map[string]any {
	m.t.Helper()
	list := make([]any, len(fields))
	for i, f := range fields {
		list[i] = f
	}
	q := &queryMatrix{t: m.t, coll: m.coll}
	return q.rest(token, id, map[string]any{"fields": list})
}

// post sends the Flow's body for id and checks every subscriber: a
// delete's key, or a create's or update's data against its REST read.
func (m *gqlMatrix) post(action, id string, deleteTo ...string) {
	m.t.Helper()
	m.step++
	body := fmt.Sprintf(`{"event":"%s.items.%s","payload":{},"keys":["%s"],"collection":"%s"}`, m.coll, action, id, m.coll)
	if status, out := postWebhook(m.t, m.b, body); status != http.StatusAccepted {
		m.t.Fatalf("webhook: %d %s", status, out)
	}
	m.b.Settle(m.t)
	for _, s := range m.subs {
		var want map[string]any
		if action == "delete" {
			if !contains(deleteTo, s.name) {
				s.c.quiet(fmt.Sprintf("%s-%d", s.name, m.step))
				continue
			}
		} else if want = m.rest(s.token, id, s.fields); want == nil {
			s.c.quiet(fmt.Sprintf("%s-%d", s.name, m.step))
			continue
		}
		f := s.c.next()
		raw, _ := json.Marshal(f)
		payload, _ := f["payload"].(map[string]any)
		data, _ := payload["data"].(map[string]any)
		ev, _ := data[m.coll+"_mutated"].(map[string]any)
		if f["type"] != "next" || ev["event"] != action || ev["key"] != id {
			m.t.Fatalf("step %d %s: want the %s of %s, got %s", m.step, s.name, action, id, raw)
		}
		if action == "delete" {
			if ev["data"] != nil {
				m.t.Fatalf("step %d %s: a delete with data: %s", m.step, s.name, raw)
			}
			continue
		}
		if !reflect.DeepEqual(ev["data"], idsAsStrings(want)) {
			rest, _ := json.Marshal(want)
			m.t.Fatalf("step %d %s: received %s; its own REST read answers %s", m.step, s.name, raw, rest)
		}
	}
}

// idsAsStrings is a REST read as GraphQL serializes it: primary keys (id)
// are IDs, strings.
func idsAsStrings(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if k == "id" && e != nil {
				out[k] = strings.Trim(fmt.Sprint(e), `"`)
				if f, ok := e.(float64); ok {
					out[k] = fmt.Sprint(int64(f))
				}
				continue
			}
			out[k] = idsAsStrings(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = idsAsStrings(e)
		}
		return out
	}
	return v
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestGraphQLPermissionMatrix: the permission matrix's viewers (an admin,
// a role without "secret", a role reading only published items, the public
// role reading published titles) as GraphQL subscribers of one public-mode
// endpoint (the users authenticated with Directus's auth message), each selecting
// every field its schema has; the fields they may not read are validation
// errors. Creates, updates (the item entering and leaving a rule) and the
// delete reach each exactly as its REST read allows; the secret never
// reaches a viewer that cannot read it.
func TestGraphQLPermissionMatrix(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	cfg.GraphQLEnabled = true
	cfg.GraphQLAuthMode = "public"
	b := brokertest.Start(t, cfg)
	m := &gqlMatrix{t: t, b: b, url: strings.Replace(b.URL, "http://", "ws://", 1) + cfg.GraphQLPath, coll: "articles", authFrame: true}
	m.subscribe("admin", adminToken, "id title status secret", "id", "title", "status", "secret")
	m.subscribe("fields", fieldsToken, "id title status", "id", "title", "status")
	m.subscribe("published", pubToken, "id title status secret", "id", "title", "status", "secret")
	m.subscribe("public", "", "id title", "id", "title")
	m.refused(fieldsToken, "secret", `Cannot query field "secret" on type "articles".`)
	m.refused("", "status", `Cannot query field "status" on type "articles".`)

	id := fmt.Sprint(createItem(t, "articles", map[string]any{"title": "gql draft", "status": "draft", "secret": topSecret}))
	m.post("create", id)
	_, _ = dx.Do(t.Context(), adminToken, http.MethodPatch, "/items/articles/"+id, map[string]any{"status": "published"}, nil)
	m.post("update", id)
	_, _ = dx.Do(t.Context(), adminToken, http.MethodPatch, "/items/articles/"+id, map[string]any{"secret": topSecret + "2", "title": "gql t2"}, nil)
	m.post("update", id)
	_, _ = dx.Do(t.Context(), adminToken, http.MethodPatch, "/items/articles/"+id, map[string]any{"status": "draft"}, nil)
	m.post("update", id)
	// Deleted while a draft: only the groups whose last read showed it
	// learn of it (Directus's own GraphQL tells every subscriber every
	// deleted key; the broker never tells a key its group could not see).
	_, _ = dx.Do(t.Context(), adminToken, http.MethodDelete, "/items/articles/"+id, nil, nil)
	m.post("delete", id, "admin", "fields")
}

// TestGraphQLFailClosedRelations: issue 18.1's case as GraphQL: two users
// of one role whose rule on the related collections is owner =
// $CURRENT_USER, selecting the many-to-one's and the one-to-many's fields:
// neither receives what only the other may read, and each frame is byte
// for byte what Directus's own /graphql sends that user.
func TestGraphQLFailClosedRelations(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	cfg.GraphQLEnabled = true
	w, items, refs, tasks, role := relWorld(t, "gqr", false)
	aID, aTok := w.user("a", role)
	_, bTok := w.user("b", role)
	b := brokertest.Start(t, cfg)
	m := &gqlMatrix{t: t, b: b, url: strings.Replace(b.URL, "http://", "ws://", 1) + cfg.GraphQLPath, coll: items}
	selection := "id title ref { title } tasks { title }"
	fields := []string{"id", "title", "ref.title", "tasks.title"}
	users := map[string]string{"a": aTok, "b": bTok}
	own := map[string]*gqlClient{}
	for name, tok := range users {
		m.subscribe(name, tok, selection, fields...)
		own[name] = dialGQL(t, strings.Replace(dx.URL, "http://", "ws://", 1)+"/graphql", tok)
		own[name].subscribe("s", fmt.Sprintf("subscription { %s_mutated { key event data { %s } } }", items, selection))
		own[name].quiet("subscribed")
	}
	ref := admin(t, http.MethodPost, "/items/"+refs, map[string]any{"title": "REF-A", "owner": aID})
	id := admin(t, http.MethodPost, "/items/"+items, map[string]any{"title": "t", "ref": ref})
	admin(t, http.MethodPost, "/items/"+tasks, map[string]any{"title": "A-task", "owner": aID, "item": id})
	// Directus's own sent the item's create when it was made (before its
	// task existed): drain it; the update below is compared byte for byte.
	for _, c := range own {
		if f := c.next(); f["type"] != "next" {
			t.Fatalf("Directus: %v", f)
		}
	}
	m.post("create", id)
	admin(t, http.MethodPatch, "/items/"+items+"/"+id, map[string]any{"title": "t2"})
	// The same update on the broker and on Directus's own, byte for byte.
	body := fmt.Sprintf(`{"event":"%s.items.update","payload":{},"keys":["%s"],"collection":"%s"}`, items, id, items)
	if status, out := postWebhook(t, b, body); status != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", status, out)
	}
	b.Settle(t)
	for _, s := range m.subs {
		got, want := s.c.raw(), own[s.name].raw()
		if string(got) != string(want) {
			t.Fatalf("%s: the broker sent\n %s\nDirectus's own /graphql sent\n %s", s.name, got, want)
		}
		if s.name == "b" && (strings.Contains(string(got), "REF-A") || strings.Contains(string(got), "A-task")) {
			t.Fatalf("b received a's related items: %s", got)
		}
		t.Logf("%s: %s", s.name, got)
	}
}
