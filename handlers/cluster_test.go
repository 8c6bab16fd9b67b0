package handlers_test

import (
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"
)

// TestClusterReadsFollowAccessChanges (issue 24): two instances on one
// real Redis with cluster reads and the flow-install service user, the
// users of one role on both, and of a second role reading more. Once the
// views settle, an event costs one Directus read per group for the two
// instances, and neither role receives the other's; then the role's rule changes (published →
// draft) and the access event reaches one instance: from the next event
// on, every subscriber on either instance receives exactly what its own
// REST read answers — a result read under the old rule never reaches a
// subscriber under the new one — and the two share one read again.
func TestClusterReadsFollowAccessChanges(t *testing.T) {
	r := redistest.Require(t)
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	cfg.Bus, cfg.RedisURL, cfg.RedisPrefix = "redis", r.URL, "cluster-test:"
	w := itemsWorld(t, "clu", "title", "status")
	role := w.role("readers")
	p := w.policy("published")
	perm := w.read(p, nil, map[string]any{"status": map[string]any{"_eq": "published"}})
	w.attachRole(role, p)
	// A second role reading every item, on both instances too: its group
	// and the first role's must never take each other's results.
	allRole := w.role("all readers")
	pAll := w.policy("all")
	w.read(pAll, nil, nil)
	w.attachRole(allRole, pAll)
	a, b := brokertest.Start(t, cfg), brokertest.Start(t, cfg)
	var subs []*querySub
	for i, inst := range []*brokertest.Broker{a, a, b, b, a, b} {
		r := role
		if i >= 4 {
			r = allRole
		}
		_, tok := w.user(fmt.Sprint("u", i), r)
		s := &querySub{name: fmt.Sprint("u", i), token: tok, c: brokertest.Dial(t, inst.WSURL, tok)}
		s.c.Send(t, map[string]any{"type": "subscribe", "collection": w.coll, "uid": "s"})
		if f := s.c.Next(t); f["type"] != "SUBSCRIBED" {
			t.Fatalf("subscribe: %v", f)
		}
		subs = append(subs, s)
	}
	pub := w.item(map[string]any{"title": "p", "status": "published"})
	draft := w.item(map[string]any{"title": "d", "status": "draft"})
	reads := func() int64 { return a.Broker.Metrics().Reads + b.Broker.Metrics().Reads }
	// post sends an update of id to a, and checks each subscriber
	// against its own REST read; it returns the reads the event cost.
	step := 0
	post := func(id string) int64 {
		t.Helper()
		step++
		before := reads()
		body := fmt.Sprintf(`{"event":"%s.items.update","payload":{},"keys":["%s"],"collection":"%s"}`, w.coll, id, w.coll)
		if status, out := postWebhook(t, a, body); status != http.StatusAccepted {
			t.Fatalf("webhook: %d %s", status, out)
		}
		a.Settle(t)
		b.Settle(t)
		m := &queryMatrix{t: t, coll: w.coll}
		for _, s := range subs {
			want := m.rest(s.token, id, map[string]any{})
			if want == nil {
				s.c.Quiet(t, fmt.Sprintf("%s-%d", s.name, step))
				continue
			}
			f := s.c.Next(t)
			data, _ := f["data"].([]any)
			if f["action"] != "update" || len(data) != 1 || !reflect.DeepEqual(data[0], want) {
				t.Fatalf("step %d %s: received %v; its REST read answers %v", step, s.name, f, want)
			}
		}
		return reads() - before
	}
	settle := func(what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for post(pub)+post(draft) > 4 { // two groups, one read each per event
			if time.Now().After(deadline) {
				t.Fatalf("%s: the two instances never came to one read per event", what)
			}
		}
	}
	settle("before the change")
	if n := post(pub); n != 2 {
		t.Fatalf("%d reads for one event of two groups on two instances, want 2", n)
	}
	// The rule changes; the Flow posts the access event to one instance.
	admin(t, http.MethodPatch, "/permissions/"+perm, map[string]any{"permissions": map[string]any{"status": map[string]any{"_eq": "draft"}}})
	if status, out := postWebhook(t, a, fmt.Sprintf(`{"event":"directus_permissions.items.update","payload":{},"keys":[%s],"collection":"directus_permissions"}`, perm)); status != http.StatusAccepted {
		t.Fatalf("access webhook: %d %s", status, out)
	}
	post(pub)   // nobody may read it now
	post(draft) // everybody may
	settle("after the change")
}
