package handlers_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestOwnerRuleReadsOnlyForOwners: issue 21.2 on Directus 11.17.4 with the
// service user flow install makes. Ten users of a role whose rule is
// owner = $CURRENT_USER subscribe. Before flow install has seen the rule
// (no owner lookup grant) every user's group reads each event (ten reads);
// after it, only the owner's: one read, the other nine get nothing without
// a read. An item handed from a to b reaches b (a's own REST read now
// answers nothing, and a gets nothing); its delete reaches b and not a,
// who never saw it. Every frame is the user's own REST read.
func TestOwnerRuleReadsOnlyForOwners(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	w := itemsWorld(t, "olk", "title", "owner")
	items := w.coll
	role := w.role("owners")
	p := w.policy("own items")
	w.read(p, nil, map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}})
	w.attachRole(role, p)
	type user struct{ id, token string }
	var users []user
	for i := range 10 {
		id, tok := w.user(fmt.Sprint("u", i), role)
		users = append(users, user{id, tok})
	}
	subscribeAll := func(b *brokertest.Broker) *queryMatrix {
		m := &queryMatrix{t: t, b: b, coll: items}
		for i, u := range users {
			m.subscribe(fmt.Sprint("u", i), u.token, map[string]any{"fields": []any{"id", "title", "owner"}})
		}
		return m
	}
	reads := func(b *brokertest.Broker, f func()) int64 {
		t.Helper()
		before := b.Broker.Metrics().Reads
		f()
		return b.Broker.Metrics().Reads - before
	}

	b := brokertest.Start(t, cfg)
	m := subscribeAll(b)
	id := w.item(map[string]any{"title": "a's", "owner": users[0].id})
	if n := reads(b, func() { m.post("create", id) }); n != int64(len(users)) {
		t.Fatalf("%d reads before the owner lookup grant, want one per user (%d)", n, len(users))
	}
	_ = b.Stop()

	c, err := directus.NewClient(dx.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := flow.SyncServicePolicy(t.Context(), c, adminToken); err != nil {
		t.Fatal(err)
	}
	b = brokertest.Start(t, cfg)
	m = subscribeAll(b)
	id = w.item(map[string]any{"title": "a's", "owner": users[0].id})
	if n := reads(b, func() { m.post("create", id) }); n != 1 {
		t.Fatalf("%d reads for an item of one owner, want 1", n)
	}
	// Handed from a to b.
	admin(t, http.MethodPatch, "/items/"+items+"/"+id, map[string]any{"owner": users[1].id, "title": "b's now"})
	if n := reads(b, func() { m.post("update", id) }); n != 1 {
		t.Fatalf("%d reads after the item changed owner, want 1", n)
	}
	// Deleted: b, who saw it last, gets the delete; a and the others not.
	admin(t, http.MethodDelete, "/items/"+items+"/"+id, nil)
	if status, out := postWebhook(t, b, fmt.Sprintf(`{"event":"%s.items.delete","payload":["%s"],"keys":["%s"],"collection":"%s"}`, items, id, id, items)); status != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", status, out)
	}
	b.Settle(t)
	for i, s := range m.subs {
		if i == 1 {
			if f := s.c.Next(t); f["action"] != "delete" || fmt.Sprint(f["keys"]) != "["+id+"]" {
				t.Fatalf("the owner got %v at the delete", f)
			}
			continue
		}
		s.c.Quiet(t, fmt.Sprint("delete-", i))
	}
	// An item without owner: nobody reads it, nobody gets it (the lookup
	// says so; Directus would answer every one of them nothing).
	id = w.item(map[string]any{"title": "nobody's"})
	n := reads(b, func() { m.post("create", id) })
	t.Logf("10 users with an owner rule: 1 read per event for one owner; %d for an item without owner (read as unknown)", n)
}
