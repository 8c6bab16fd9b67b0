package handlers_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestUserPathRuleSharesByValue: issue 21 on Directus 11.17.4 with the
// service user flow install makes, for a rule on a field of the user's
// related item: tier = $CURRENT_USER.wsb_org.tier ("my organization's
// tier"). Before flow install has seen the rule, every user reads apart;
// after it, users whose organizations have one tier share one read, and
// only the item's tier reads (the team lookup); a user without an
// organization reads apart. An organization's tier changed (an update of
// the related collection, no users.update) regroups its members before the
// next event, and the update still reaches the organization's own
// subscribers; a user moved to another organization follows it. Every
// frame is the user's own REST read, and nothing reaches a user whose read
// is empty.
func TestUserPathRuleSharesByValue(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	orgs := "upath_orgs"
	pk := map[string]any{"field": "id", "type": "integer", "schema": map[string]any{"is_primary_key": true, "has_auto_increment": true}}
	admin(t, http.MethodPost, "/collections", map[string]any{"collection": orgs, "schema": map[string]any{}, "meta": map[string]any{},
		"fields": []any{pk, map[string]any{"field": "name", "type": "string"}, map[string]any{"field": "tier", "type": "string"}}})
	admin(t, http.MethodPost, "/fields/directus_users", map[string]any{"field": "wsb_org", "type": "integer", "meta": map[string]any{"special": nil}, "schema": map[string]any{}})
	admin(t, http.MethodPost, "/relations", map[string]any{"collection": "directus_users", "field": "wsb_org", "related_collection": orgs,
		"schema": map[string]any{"on_delete": "SET NULL"}})
	w := itemsWorld(t, "upath", "title", "tier")
	role := w.role("org members")
	p := w.policy("the organization's tier")
	w.read(p, nil, map[string]any{"tier": map[string]any{"_eq": "$CURRENT_USER.wsb_org.tier"}})
	admin(t, http.MethodPost, "/permissions", map[string]any{"policy": p, "collection": orgs, "action": "read", "fields": []string{"*"}, "permissions": map[string]any{}})
	w.attachRole(role, p)
	org := map[string]string{}
	for name, tier := range map[string]string{"A": "gold", "B": "gold", "C": "silver"} {
		org[name] = admin(t, http.MethodPost, "/items/"+orgs, map[string]any{"name": name, "tier": tier})
	}
	type member struct{ id, token, name string }
	var members []member
	for _, o := range []string{"A", "B", "C", ""} {
		n := 2
		if o == "" {
			n = 1 // no organization: its value cannot be shared
		}
		for i := range n {
			name := fmt.Sprint("org", o, i)
			id, tok := w.user(name, role)
			if o != "" {
				admin(t, http.MethodPatch, "/users/"+id, map[string]any{"wsb_org": org[o]})
			}
			members = append(members, member{id, tok, name})
		}
	}
	subscribeAll := func(b *brokertest.Broker) (items, orgSubs *queryMatrix) {
		items = &queryMatrix{t: t, b: b, coll: w.coll}
		orgSubs = &queryMatrix{t: t, b: b, coll: orgs}
		for _, u := range members {
			items.subscribe(u.name, u.token, map[string]any{"fields": []any{"id", "title", "tier"}})
		}
		orgSubs.subscribe(members[0].name, members[0].token, map[string]any{"fields": []any{"id", "name", "tier"}})
		orgSubs.subscribe(members[4].name, members[4].token, map[string]any{"fields": []any{"id", "name", "tier"}})
		return items, orgSubs
	}
	event := func(m *queryMatrix, b *brokertest.Broker, tier string) int64 {
		t.Helper()
		id := w.item(map[string]any{"title": "for " + tier, "tier": tier})
		before := b.Broker.Metrics().Reads
		m.post("create", id) // checks every subscriber against its REST read
		return b.Broker.Metrics().Reads - before
	}

	// The service user cannot read the users' organizations yet.
	b := brokertest.Start(t, cfg)
	items, _ := subscribeAll(b)
	if n := event(items, b, "gold"); n != int64(len(members)) {
		t.Fatalf("%d reads before the grant, want one per user (%d)", n, len(members))
	}
	_ = b.Stop()

	// flow install again: the service user gets wsb_org of the users and
	// the key and tier of every organization.
	c, err := directus.NewClient(dx.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := flow.SyncServicePolicy(t.Context(), c, adminToken); err != nil {
		t.Fatal(err)
	}
	b = brokertest.Start(t, cfg)
	items, orgSubs := subscribeAll(b)
	// The item's tier reads once; the user without an organization reads
	// apart for every event.
	for _, tier := range []string{"gold", "silver", "gold"} {
		if n := event(items, b, tier); n != 2 {
			t.Fatalf("%d reads for a %s item, want 2 (its tier's class and the user without an organization)", n, tier)
		}
	}

	// Organization B becomes silver: an update of the related item only.
	admin(t, http.MethodPatch, "/items/"+orgs+"/"+org["B"], map[string]any{"tier": "silver"})
	orgSubs.post("update", org["B"]) // delivered to the organization's subscribers, and a regroup
	for _, tier := range []string{"silver", "gold"} {
		if n := event(items, b, tier); n != 2 {
			t.Fatalf("%d reads for a %s item after B's change, want 2", n, tier)
		}
	}

	// A user of A moves to C.
	admin(t, http.MethodPatch, "/users/"+members[0].id, map[string]any{"wsb_org": org["C"]})
	if status, out := postWebhook(t, b, fmt.Sprintf(`{"event":"directus_users.items.update","payload":{"wsb_org":%s},"keys":["%s"],"collection":"directus_users"}`, org["C"], members[0].id)); status != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", status, out)
	}
	for _, tier := range []string{"silver", "gold"} {
		if n := event(items, b, tier); n != 2 {
			t.Fatalf("%d reads for a %s item after the move, want 2", n, tier)
		}
	}
	t.Logf("%d users in 3 organizations of 2 tiers: 2 reads per event (the tier's class, the user without one), %d groups", len(members), b.Broker.Metrics().Groups)
}
