package handlers_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestUserFieldRuleSharesByValue: issue 21.1 on Directus 11.17.4 with the
// service user flow install makes. A rule team = $CURRENT_USER.wsb_team:
// before flow install has seen the rule the service user cannot read the
// users' teams, and every user reads apart (one read per user and event);
// after it, users of one team share one read, and only the item's team
// reads (the owner lookup tells whose team an item is); a user moved to
// another team (users.update) reads with that team from the next event on. Every frame
// is the user's own REST read, and nothing reaches a user whose read is
// empty.
func TestUserFieldRuleSharesByValue(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	admin(t, http.MethodPost, "/fields/directus_users", map[string]any{"field": "wsb_team", "type": "string"})
	w := itemsWorld(t, "uft", "title", "team")
	items := w.coll
	role := w.role("team members")
	p := w.policy("the team's items")
	w.read(p, nil, map[string]any{"team": map[string]any{"_eq": "$CURRENT_USER.wsb_team"}})
	w.attachRole(role, p)
	type member struct{ id, token, name string }
	var members []member
	for _, team := range []string{"x", "y"} {
		for i := range 4 {
			name := fmt.Sprint(team, i)
			id, tok := w.user(name, role)
			admin(t, http.MethodPatch, "/users/"+id, map[string]any{"wsb_team": team})
			members = append(members, member{id, tok, name})
		}
	}
	subscribeAll := func(b *brokertest.Broker) *queryMatrix {
		m := &queryMatrix{t: t, b: b, coll: items}
		for _, u := range members {
			m.subscribe(u.name, u.token, map[string]any{"fields": []any{"id", "title", "team"}})
		}
		return m
	}
	event := func(m *queryMatrix, b *brokertest.Broker, action, team string) int64 {
		t.Helper()
		id := w.item(map[string]any{"title": "for " + team, "team": team})
		before := b.Broker.Metrics().Reads
		m.post(action, id) // checks every subscriber against its REST read
		return b.Broker.Metrics().Reads - before
	}

	// The service user cannot read wsb_team yet: one read per user.
	b := brokertest.Start(t, cfg)
	m := subscribeAll(b)
	if n := event(m, b, "create", "x"); n != int64(len(members)) {
		t.Fatalf("%d reads before the grant, want one per user (%d)", n, len(members))
	}
	_ = b.Stop()

	// flow install again: the grant follows the rule.
	c, err := directus.NewClient(dx.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := flow.SyncServicePolicy(t.Context(), c, adminToken); err != nil {
		t.Fatal(err)
	}
	b = brokertest.Start(t, cfg)
	m = subscribeAll(b)
	for _, team := range []string{"x", "y"} {
		if n := event(m, b, "create", team); n != 1 {
			t.Fatalf("%d reads for an item of team %s, want 1 (its team's: the owner lookup tells the other team reads nothing)", n, team)
		}
	}
	// x0 moves to team y.
	admin(t, http.MethodPatch, "/users/"+members[0].id, map[string]any{"wsb_team": "y"})
	if status, out := postWebhook(t, b, fmt.Sprintf(`{"event":"directus_users.items.update","payload":{"wsb_team":"y"},"keys":["%s"],"collection":"directus_users"}`, members[0].id)); status != http.StatusAccepted {
		t.Fatalf("webhook: %d %s", status, out)
	}
	for _, team := range []string{"y", "x"} {
		if n := event(m, b, "create", team); n != 1 {
			t.Fatalf("%d reads after the move for team %s, want 1", n, team)
		}
	}
	t.Logf("8 users in 2 teams: 1 read per event (the item's team), %d groups", b.Broker.Metrics().Groups)
}
