package handlers_test

import (
	"fmt"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestMixedRuleSharesOthersItems: issue 21.3 on Directus 11.17.4 with the
// service user flow install makes. Ten users of a role whose rule is
// status = published OR owner = $CURRENT_USER. An item of u0's: u0 reads it
// with its own token; the nine others' reads of someone else's item answer
// alike (the published part only), so they share one read. Every frame is
// the user's own REST read: a published item reaches everyone, a draft only
// its owner, nobody's draft nobody.
func TestMixedRuleSharesOthersItems(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	w := itemsWorld(t, "mxr", "title", "status", "owner")
	items := w.coll
	role := w.role("readers")
	p := w.policy("published or own")
	w.read(p, nil, map[string]any{"_or": []any{
		map[string]any{"status": map[string]any{"_eq": "published"}},
		map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}},
	}})
	w.attachRole(role, p)
	var ids []string
	m := &queryMatrix{t: t}
	var tokens []string
	for i := range 10 {
		id, tok := w.user(fmt.Sprint("u", i), role)
		ids, tokens = append(ids, id), append(tokens, tok)
	}
	c, err := directus.NewClient(dx.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := flow.SyncServicePolicy(t.Context(), c, adminToken); err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, cfg)
	m.b, m.coll = b, items
	for i, tok := range tokens {
		m.subscribe(fmt.Sprint("u", i), tok, map[string]any{"fields": []any{"id", "title", "status", "owner"}})
	}
	for _, c := range []struct {
		name   string
		item   map[string]any
		atMost int64
	}{
		{"u0's published item", map[string]any{"title": "p", "status": "published", "owner": ids[0]}, 3},
		{"u0's draft", map[string]any{"title": "d", "status": "draft", "owner": ids[0]}, 3},
		{"nobody's draft", map[string]any{"title": "n", "status": "draft"}, 2},
	} {
		id := w.item(c.item)
		before := b.Broker.Metrics().Reads
		m.post("create", id) // every frame against the user's REST read
		n := b.Broker.Metrics().Reads - before
		t.Logf("%s: %d reads for 10 users", c.name, n)
		if n > c.atMost {
			t.Fatalf("%s: %d reads for 10 users, want at most %d (the owner's and one shared)", c.name, n, c.atMost)
		}
	}
}
