package handlers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestVersionReadsFollowEachUser: issue 18.3 on Directus 11.17.4 with
// content versioning on. A subscription whose query names a content
// version (query.version) reads under the reader's own rules on
// directus_versions: two users of one role whose policies differ only
// there never share, and each gets
// exactly what its own REST read with that version answers. Two users of
// one role whose rule on directus_versions is user_created =
// $CURRENT_USER: a's version is read versioned by a only. Classes are per
// user for such queries (reason "version"); this checks it on the real
// Directus, with the service user flow install makes.
func TestVersionReadsFollowEachUser(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	const items = "ver_items"
	pk := map[string]any{"field": "id", "type": "integer", "schema": map[string]any{"is_primary_key": true, "has_auto_increment": true}}
	admin(t, http.MethodPost, "/collections", map[string]any{"collection": items, "schema": map[string]any{}, "meta": map[string]any{"versioning": true},
		"fields": []any{pk, map[string]any{"field": "title", "type": "string"}}})
	w := &world{t: t, prefix: "ver", coll: items}
	role := w.role("readers")
	p := w.policy("items")
	w.read(p, nil, nil)
	w.attachRole(role, p)
	// Each user reads the versions they made: the same policies, answers
	// that differ by user.
	versions := w.policy("own versions")
	admin(t, http.MethodPost, "/permissions", map[string]any{"policy": versions, "collection": "directus_versions", "action": "read", "fields": []string{"*"},
		"permissions": map[string]any{"user_created": map[string]any{"_eq": "$CURRENT_USER"}}})
	for _, perm := range []map[string]any{
		{"collection": "directus_versions", "action": "create"}, {"collection": "directus_versions", "action": "update"},
		{"collection": items, "action": "update"},
	} {
		perm["policy"], perm["fields"], perm["permissions"] = versions, []string{"*"}, map[string]any{}
		admin(t, http.MethodPost, "/permissions", perm)
	}
	w.attachRole(role, versions)
	_, aTok := w.user("a", role)
	_, bTok := w.user("b", role)

	id := w.item(map[string]any{"title": "main"})
	var version struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	// a makes the version (its user_created).
	if _, err := dx.Do(t.Context(), aTok, http.MethodPost, "/versions", map[string]any{"key": "draft", "name": "Draft", "collection": items, "item": id}, &version); err != nil {
		t.Fatal(err)
	}
	if _, err := dx.Do(t.Context(), aTok, http.MethodPost, "/versions/"+version.Data.ID+"/save", map[string]any{"title": "versioned"}, nil); err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, cfg)
	m := &queryMatrix{t: t, b: b, coll: items}
	query := map[string]any{"version": "draft", "fields": []any{"id", "title"}}
	subs := map[string]*brokertest.Client{}
	for name, tok := range map[string]string{"a": aTok, "b": bTok} {
		c := brokertest.Dial(t, b.WSURL, tok)
		c.Send(t, map[string]any{"type": "subscribe", "collection": items, "uid": "v", "query": query})
		f := c.Next(t)
		rest := m.rest(tok, id, query)
		t.Logf("%s: subscribe answered %s; its REST read with the version: %v", name, mustJSON(f), rest)
		if f["type"] == "SUBSCRIBED" {
			subs[name] = c
		}
	}
	if subs["a"] == nil {
		t.Fatal("a, who may read versions, could not subscribe to one")
	}
	admin(t, http.MethodPatch, "/items/"+items+"/"+id, map[string]any{"title": "main 2"})
	if status, out := postWebhook(t, b, fmt.Sprintf(`{"event":"%s.items.update","payload":{"title":"main 2"},"keys":["%s"],"collection":"%s"}`, items, id, items)); status != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", status, out)
	}
	b.Settle(t)
	for name, tok := range map[string]string{"a": aTok, "b": bTok} {
		c := subs[name]
		if c == nil {
			continue // refused at subscribe: nothing to receive
		}
		want := m.rest(tok, id, query)
		if want == nil {
			c.Quiet(t, "after-"+name)
			continue
		}
		f := c.Next(t)
		data, _ := f["data"].([]any)
		if len(data) != 1 || mustJSON(data[0]) != mustJSON(want) {
			t.Fatalf("%s received %s; its own REST read with the version answers %s", name, mustJSON(f), mustJSON(want))
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
