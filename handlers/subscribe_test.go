package handlers_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestSubscriptionOptions: several subscriptions per connection told apart
// by uid, event filters, query filters, unsubscribe by uid and collection.
func TestSubscriptionOptions(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := brokertest.Dial(t, b.WSURL, adminToken)
	subscribe := func(m map[string]any) {
		t.Helper()
		m["type"] = "subscribe"
		m["collection"] = "articles"
		if f := c.Request(t, m); f["type"] != "SUBSCRIBED" {
			t.Fatalf("subscribe %v: %v", m, f)
		}
	}
	subscribe(map[string]any{"uid": "all"})
	subscribe(map[string]any{"uid": "deletes", "event": "delete"})
	subscribe(map[string]any{"uid": "published", "query": map[string]any{"fields": []string{"id", "status"}, "filter": map[string]any{"status": map[string]any{"_eq": "published"}}}})

	// A draft: only "all" sees the create.
	id := createItem(t, "articles", map[string]any{"title": "opt", "status": "draft"})
	postWebhook(t, b, flowBody("create", id, `{"title":"opt","status":"draft"}`))
	b.Settle(t)
	if f := c.Next(t); f["uid"] != "all" || f["action"] != "create" {
		t.Fatalf("want the create for uid all, got %v", f)
	}
	c.Quiet(t, "q1")

	// Published: "all" and "published" (shaped by its fields) see the update.
	_, _ = dx.Do(t.Context(), adminToken, http.MethodPatch, fmt.Sprintf("/items/articles/%v", id), map[string]any{"status": "published"}, nil)
	postWebhook(t, b, flowBody("update", id, `{"status":"published"}`))
	b.Settle(t)
	got := map[string]map[string]any{}
	for range 2 {
		f := c.Next(t)
		got[f["uid"].(string)] = f
	}
	if got["all"] == nil || got["published"] == nil {
		t.Fatalf("want updates for all and published, got %v", got)
	}
	if d := got["published"]["data"].([]any)[0].(map[string]any); len(d) != 2 || d["status"] != "published" {
		t.Fatalf("published subscription's data not shaped by its fields: %v", d)
	}
	c.Quiet(t, "q2")

	// Unsubscribe by uid, then delete: "all" and "deletes" get it.
	if f := c.Request(t, map[string]any{"type": "unsubscribe", "uid": "published"}); f["type"] != "UNSUBSCRIBED" {
		t.Fatalf("unsubscribe: %v", f)
	}
	postWebhook(t, b, flowBody("delete", id, fmt.Sprintf(`["%v"]`, id)))
	b.Settle(t)
	uids := map[any]bool{}
	for range 2 {
		f := c.Next(t)
		if f["action"] != "delete" {
			t.Fatalf("want deletes, got %v", f)
		}
		uids[f["uid"]] = true
	}
	if !uids["all"] || !uids["deletes"] {
		t.Fatalf("want deletes for all and deletes, got %v", uids)
	}
	c.Quiet(t, "q3")

	// Unsubscribe by collection removes the rest.
	if f := c.Request(t, map[string]any{"type": "unsubscribe", "collection": "articles", "uid": "bycoll"}); f["type"] == "ERROR" {
		t.Fatalf("unsubscribe by collection: %v", f)
	}
	postWebhook(t, b, flowBody("delete", id, fmt.Sprintf(`["%v"]`, id)))
	b.Settle(t)
	c.Quiet(t, "q4")
	if m := b.Broker.Metrics(); m.Subscriptions != 0 {
		t.Fatalf("subscriptions left: %+v", m)
	}
}

// TestSubscribeRefused: subscribing needs read permission on the collection.
func TestSubscribeRefused(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := brokertest.Dial(t, b.WSURL, noneToken)
	f := c.Request(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "s1"})
	if f["type"] != "ERROR" || f["data"].(map[string]any)["status"] != 403.0 {
		t.Fatalf("want 403, got %v", f)
	}
	f = c.Request(t, map[string]any{"type": "subscribe", "collection": "notes", "uid": "s2", "event": "explode"})
	if f["type"] != "ERROR" || f["data"].(map[string]any)["status"] != 400.0 {
		t.Fatalf("want 400 for a bad event filter, got %v", f)
	}
	if m := b.Broker.Metrics(); m.Subscriptions != 0 {
		t.Fatalf("refused subscriptions were attached: %+v", m)
	}
}

// TestDirectusDownDuringDelivery: when the read for a delivery fails,
// subscribers get an EVENTS_MISSED error, never the unfiltered payload. A
// proxy in front of the real Directus injects the outage.
func TestDirectusDownDuringDelivery(t *testing.T) {
	requireDirectus(t)
	target, _ := url.Parse(dx.URL)
	var down atomic.Bool
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	cfg := brokerConfig(t)
	cfg.DirectusURL = front.URL
	b := brokertest.Start(t, cfg)
	c := brokertest.Dial(t, b.WSURL, fieldsToken)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "s"})
	c.NextOfType(t, "SUBSCRIBED")

	id := createItem(t, "articles", map[string]any{"title": "down", "status": "draft", "secret": topSecret})
	down.Store(true)
	postWebhook(t, b, flowBody("create", id, `{"title":"down","secret":"`+topSecret+`"}`))
	b.Settle(t)
	f := c.Next(t)
	data, _ := f["data"].(map[string]any)
	if f["type"] != "ERROR" || data["code"] != "EVENTS_MISSED" || f["uid"] != "s" || data["event_id"] == "" {
		t.Fatalf("want EVENTS_MISSED, got %v", f)
	}
	if strings.Contains(fmt.Sprint(f), topSecret) {
		t.Fatalf("unfiltered payload leaked: %v", f)
	}
	if m := b.Broker.Metrics(); m.EventsMissed != 1 {
		t.Fatalf("missed count: %+v", m)
	}
	down.Store(false)
	postWebhook(t, b, flowBody("update", id, `{"title":"down"}`))
	if f := c.NextOfType(t, "SUBSCRIPTION"); f["action"] != "update" {
		t.Fatalf("after recovery: %v", f)
	}
}

// TestSlowConsumer: a client that stops reading is disconnected with 4008
// while a reading client keeps receiving everything.
func TestSlowConsumer(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.SendBuffer = 4
	cfg.SendQueueBytes = 512 << 10
	cfg.WriteWait = 2 * time.Second
	b := brokertest.Start(t, cfg)
	big := strings.Repeat("x", 256<<10)
	id := createItem(t, "articles", map[string]any{"title": "big", "status": "published", "body": big})

	fast := brokertest.Dial(t, b.WSURL, adminToken)
	fast.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
	fast.NextOfType(t, "SUBSCRIBED")
	// The slow client subscribes, then never reads again.
	slow, _, err := websocket.DefaultDialer.Dial(b.WSURL, http.Header{"Authorization": {"Bearer " + adminToken}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	_ = slow.WriteJSON(map[string]any{"type": "subscribe", "collection": "articles"})
	var ack map[string]any
	if err := slow.ReadJSON(&ack); err != nil || ack["type"] != "SUBSCRIBED" {
		t.Fatalf("slow subscribe: %v %v", ack, err)
	}
	// Each event is ~256 KiB; socket buffers hold a few MiB at most, so
	// well before 200 events the send buffer of 4 frames is full.
	sent := 0
	for ; sent < 200 && b.Server.Evicted() == 0; sent++ {
		postWebhook(t, b, flowBody("update", id, `{"title":"big"}`))
		b.Settle(t)
	}
	if b.Server.Evicted() != 1 {
		t.Fatalf("slow client not evicted after %d events", sent)
	}
	for i := range sent {
		if f := fast.NextOfType(t, "SUBSCRIPTION"); f["action"] != "update" {
			t.Fatalf("fast client, event %d: %v", i, f)
		}
	}
	// The slow client's connection ends (with 4008 when the close frame
	// got through its full socket buffer).
	_ = slow.SetReadDeadline(time.Now().Add(brokertest.DefaultWait))
	for {
		if _, _, err := slow.ReadMessage(); err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code != 4008 {
				t.Fatalf("want close 4008, got %v", err)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("slow client still connected")
			}
			break
		}
	}
}

// TestBurstDoesNotEvictReaders: a burst far larger than melody's queue (one
// webhook carrying 300 events, dispatched as one batch) reaches a client
// that keeps reading, in order, without evicting it.
func TestBurstDoesNotEvictReaders(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.SendBuffer = 2
	b := brokertest.Start(t, cfg)
	id := createItem(t, "articles", map[string]any{"title": "burst", "status": "published"})
	c := brokertest.Dial(t, b.WSURL, adminToken)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
	c.NextOfType(t, "SUBSCRIBED")
	const n = 300
	events := make([]string, n)
	for i := range events {
		events[i] = flowBody("update", id, `{"title":"burst"}`)
	}
	if status, body := postWebhook(t, b, "["+strings.Join(events, ",")+"]"); status != 202 {
		t.Fatalf("webhook: %d %s", status, body)
	}
	last := ""
	for i := range n {
		f := c.NextOfType(t, "SUBSCRIPTION")
		id, _ := f["id"].(string)
		if last != "" && id <= last && len(id) == len(last) {
			t.Fatalf("event %d out of order: %s after %s", i, id, last)
		}
		last = id
	}
	if b.Server.Evicted() != 0 {
		t.Fatalf("a reading client was evicted during the burst")
	}
}

// TestConcurrentSubscribesLeaveOne: subscribes run concurrently; two for the
// same key leave one subscription, and none outlives the connection.
func TestConcurrentSubscribesLeaveOne(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := brokertest.Dial(t, b.WSURL, adminToken)
	for range 2 {
		c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "init": true})
	}
	seen := map[any]int{}
	for range 4 { // each: SUBSCRIBED, then its init
		f := c.Next(t)
		seen[f["type"]]++
	}
	if seen["SUBSCRIBED"] != 2 || seen["SUBSCRIPTION"] != 2 {
		t.Fatalf("want two acknowledgements and two init frames, got %v", seen)
	}
	// The second subscribe replaces the first just after its init frame.
	waitFor(t, "one subscription for one key", func() bool { return b.Broker.Metrics().Subscriptions == 1 })
	c.Conn.Close()
	waitFor(t, "no subscription after disconnect", func() bool { return b.Broker.Metrics().Subscriptions == 0 })
}

// waitFor polls cond until it holds, failing after brokertest.DefaultWait.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(brokertest.DefaultWait); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, bounded by the deadline
	}
}
