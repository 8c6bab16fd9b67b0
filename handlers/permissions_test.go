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

const topSecret = "TOP-SECRET-VALUE"

// viewer is one subscriber of the permission matrix.
type viewer struct {
	name  string
	token string // "" = public role
	c     *brokertest.Client
}

// restRead is what token reads of articles/id through the REST API now
// (nil when it may not read the item).
func restRead(t *testing.T, token string, id any) map[string]any {
	t.Helper()
	var out struct {
		Data map[string]any `json:"data"`
	}
	status, err := dx.Do(t.Context(), token, http.MethodGet, fmt.Sprintf("/items/articles/%v", id), nil, &out)
	if status == http.StatusForbidden {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.Data
}

func flowBody(action string, id any, payload string) string {
	if action == "create" {
		return fmt.Sprintf(`{"event":"articles.items.create","payload":%s,"key":%v,"collection":"articles"}`, payload, id)
	}
	return fmt.Sprintf(`{"event":"articles.items.%s","payload":%s,"keys":["%v"],"collection":"articles"}`, action, payload, id)
}

// TestPermissionMatrix subscribes an admin, a role without the field
// "secret", a role that reads only published items and the public role to
// one collection, and checks that for creates, updates (including an item
// leaving a role's rule) and deletes each receives exactly what its token
// reads through REST, and never the secret.
func TestPermissionMatrix(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.WebsocketPublic = true
	b := brokertest.Start(t, cfg)
	viewers := []*viewer{{name: "admin", token: adminToken}, {name: "fields", token: fieldsToken}, {name: "published", token: pubToken}, {name: "public"}}
	for _, v := range viewers {
		v.c = brokertest.Dial(t, b.WSURL, v.token)
		v.c.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
		if f := v.c.Next(t); f["type"] != "SUBSCRIBED" {
			t.Fatalf("%s: subscribe answered %v", v.name, f)
		}
	}

	// expect posts body and checks each viewer against its REST read.
	step := 0
	expect := func(action string, id any, payload string) {
		t.Helper()
		step++
		if status, out := postWebhook(t, b, flowBody(action, id, payload)); status != 202 {
			t.Fatalf("webhook: %d %s", status, out)
		}
		b.Settle(t)
		for _, v := range viewers {
			var want map[string]any
			if action != "delete" {
				want = restRead(t, v.token, id)
				if want == nil {
					v.c.Quiet(t, fmt.Sprintf("%s-%d", v.name, step))
					continue
				}
			}
			f := v.c.Next(t)
			raw, _ := json.Marshal(f)
			readable, _ := json.Marshal(want)
			if strings.Contains(string(raw), topSecret) && !strings.Contains(string(readable), topSecret) {
				t.Fatalf("%s received the secret, which it cannot read through REST: %s", v.name, raw)
			}
			if f["type"] != "SUBSCRIPTION" || f["action"] != action || fmt.Sprint(f["keys"]) != fmt.Sprintf("[%v]", id) {
				t.Fatalf("%s: want %s of %v, got %s", v.name, action, id, raw)
			}
			if action == "delete" {
				continue
			}
			data := f["data"].([]any)
			if len(data) != 1 || !reflect.DeepEqual(data[0], want) {
				t.Fatalf("%s: data %v, REST reads %v", v.name, data, want)
			}
			payload := f["payload"].(map[string]any)
			if action == "create" && !reflect.DeepEqual(payload, want) {
				t.Fatalf("%s: create payload %v, REST reads %v", v.name, payload, want)
			}
			for k, val := range payload {
				if !reflect.DeepEqual(want[k], val) {
					t.Fatalf("%s: payload field %s=%v not what REST reads (%v)", v.name, k, val, want)
				}
			}
		}
	}

	id := createItem(t, "articles", map[string]any{"title": "draft one", "status": "draft", "secret": topSecret})
	expect("create", id, `{"title":"draft one","status":"draft","secret":"`+topSecret+`"}`)

	_, _ = dx.Do(t.Context(), adminToken, http.MethodPatch, fmt.Sprintf("/items/articles/%v", id), map[string]any{"status": "published"}, nil)
	expect("update", id, `{"status":"published"}`)

	_, _ = dx.Do(t.Context(), adminToken, http.MethodPatch, fmt.Sprintf("/items/articles/%v", id), map[string]any{"secret": topSecret + "2", "title": "t2"}, nil)
	expect("update", id, `{"secret":"`+topSecret+`2","title":"t2"}`)

	// The item leaves the "published" rule: those roles get nothing.
	_, _ = dx.Do(t.Context(), adminToken, http.MethodPatch, fmt.Sprintf("/items/articles/%v", id), map[string]any{"status": "draft"}, nil)
	expect("update", id, `{"status":"draft"}`)

	// Deleted: only groups whose last read showed the item learn of it.
	_, _ = dx.Do(t.Context(), adminToken, http.MethodDelete, fmt.Sprintf("/items/articles/%v", id), nil, nil)
	if status, out := postWebhook(t, b, flowBody("delete", id, fmt.Sprintf(`["%v"]`, id))); status != 202 {
		t.Fatalf("webhook: %d %s", status, out)
	}
	b.Settle(t)
	for _, v := range viewers {
		if v.name == "published" || v.name == "public" {
			v.c.Quiet(t, v.name+"-delete")
			continue
		}
		f := v.c.Next(t)
		if f["action"] != "delete" || fmt.Sprint(f["keys"]) != fmt.Sprintf("[%v]", id) {
			t.Fatalf("%s: want the delete, got %v", v.name, f)
		}
	}
}

func postWebhook(t *testing.T, b *brokertest.Broker, body string) (int, string) {
	t.Helper()
	status, out, err := b.PostWebhook(body)
	if err != nil {
		t.Fatal(err)
	}
	return status, out
}

// TestInitSnapshot: init:true first sends what the token's query reads now.
func TestInitSnapshot(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.WebsocketPublic = true
	b := brokertest.Start(t, cfg)
	createItem(t, "articles", map[string]any{"title": "init-pub", "status": "published", "secret": topSecret})
	createItem(t, "articles", map[string]any{"title": "init-draft", "status": "draft", "secret": topSecret})
	query := map[string]any{"fields": []string{"*"}, "sort": []string{"id"}, "filter": map[string]any{"title": map[string]any{"_starts_with": "init-"}}}
	for _, token := range []string{adminToken, fieldsToken, pubToken, ""} {
		c := brokertest.Dial(t, b.WSURL, token)
		c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "init": true, "query": query, "uid": "s"})
		if f := c.Next(t); f["type"] != "SUBSCRIBED" || f["uid"] != "s" {
			t.Fatalf("token %q: %v", token, f)
		}
		f := c.Next(t)
		var want struct{ Data []any }
		_, err := dx.Do(t.Context(), token, http.MethodGet, "/items/articles?fields=*&sort=id&filter[title][_starts_with]=init-", nil, &want)
		if err != nil {
			t.Fatal(err)
		}
		if f["action"] != "init" || !reflect.DeepEqual(f["data"], want.Data) || f["uid"] != "s" {
			t.Fatalf("token %q: init %v, REST reads %v", token, f, want.Data)
		}
	}
}

// TestReadsFollowGroups: 40 subscribers holding 4 distinct (token, query)
// pairs cost 4 reads per event, not 40.
func TestReadsFollowGroups(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	tokens := []string{adminToken, fieldsToken, pubToken, adminToken}
	queries := []map[string]any{nil, nil, nil, {"fields": []string{"id", "title"}}}
	var clients []*brokertest.Client
	for i := range 40 {
		c := brokertest.Dial(t, b.WSURL, tokens[i%4])
		c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "query": queries[i%4]})
		c.NextOfType(t, "SUBSCRIBED")
		clients = append(clients, c)
	}
	if m := b.Broker.Metrics(); m.Groups != 4 || m.Subscriptions != 40 {
		t.Fatalf("want 40 subscriptions in 4 groups, got %+v", m)
	}
	before := b.Broker.Metrics().Reads
	const events = 3
	for range events {
		id := createItem(t, "articles", map[string]any{"title": "g", "status": "published"})
		postWebhook(t, b, flowBody("create", id, `{"title":"g"}`))
		b.Settle(t) // one event per dispatch round: queued events would share reads
	}
	if reads := b.Broker.Metrics().Reads - before; reads != 4*events {
		t.Fatalf("want %d reads (4 groups x %d events), got %d", 4*events, events, reads)
	}
	for i, c := range clients {
		for range events {
			if f := c.NextOfType(t, "SUBSCRIPTION"); f["action"] != "create" {
				t.Fatalf("client %d: %v", i, f)
			}
		}
	}
}

// TestPermissionChangeAppliesNextEvent: a permission changed in Directus
// applies from the next event on, without reconnecting.
func TestPermissionChangeAppliesNextEvent(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	ctx := t.Context()
	role, err := dx.CreateRoleWithReadPolicy(ctx, "changing", "articles", []string{"id", "title"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dx.CreateUser(ctx, "changing@example.com", "changing-token", role); err != nil {
		t.Fatal(err)
	}
	c := brokertest.Dial(t, b.WSURL, "changing-token")
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
	c.NextOfType(t, "SUBSCRIBED")
	id := createItem(t, "articles", map[string]any{"title": "perm", "status": "draft", "secret": topSecret})
	postWebhook(t, b, flowBody("create", id, `{"title":"perm"}`))
	if f := c.NextOfType(t, "SUBSCRIPTION"); strings.Contains(fmt.Sprint(f), topSecret) {
		t.Fatalf("secret before the permission allows it: %v", f)
	}
	// Widen the role's read permission to every field.
	var perms struct {
		Data []struct {
			ID float64 `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, adminToken, http.MethodGet, "/permissions?filter[policy][roles][role][_eq]="+role+"&filter[collection][_eq]=articles&fields=id", nil, &perms); err != nil || len(perms.Data) != 1 {
		t.Fatalf("permission lookup: %v %+v", err, perms)
	}
	if _, err := dx.Do(ctx, adminToken, http.MethodPatch, fmt.Sprintf("/permissions/%v", perms.Data[0].ID), map[string]any{"fields": []string{"*"}}, nil); err != nil {
		t.Fatal(err)
	}
	postWebhook(t, b, flowBody("update", id, `{"secret":"x"}`))
	f := c.NextOfType(t, "SUBSCRIPTION")
	if f["payload"].(map[string]any)["secret"] != topSecret {
		t.Fatalf("widened permission not applied to the next event: %v", f)
	}
}
