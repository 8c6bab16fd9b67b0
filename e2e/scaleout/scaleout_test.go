//go:build linux

package scaleout

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"
)

// historySize is the brokers' history_size: small, so that the retention
// scenario can exceed it with a few events.
const historySize = 5

// TestScaleOutRedis runs three broker processes on one Redis and one
// Directus. The scenarios run in order on the same processes; each uses its
// own collection.
func TestScaleOutRedis(t *testing.T) {
	requireDirectus(t)
	r := redistest.Require(t)
	env := map[string]string{"BUS": "redis", "REDIS_URL": r.URL, "HISTORY_SIZE": fmt.Sprint(historySize)}
	brokers := []*brokerProc{startBroker(t, "1", env), startBroker(t, "2", env), startBroker(t, "3", env)}
	b1, b2, b3 := brokers[0], brokers[1], brokers[2]

	// An event posted to any instance reaches the subscribers of all three,
	// each instance reading with its own subscribers' tokens.
	t.Run("fan-out", func(t *testing.T) {
		clients := make([]*brokertest.Client, 3)
		for i, b := range brokers {
			clients[i] = subscribe(t, b, adminToken, "fanout", "")
		}
		restricted := subscribe(t, b3, pubToken, "fanout", "")
		draft := createItem(t, "fanout", map[string]any{"title": "d", "status": "draft"})
		published := createItem(t, "fanout", map[string]any{"title": "p", "status": "published"})
		var ids []string
		for _, b := range brokers {
			ids = append(ids, b.mustPost(t, "fanout", draft))
		}
		visible := b2.mustPost(t, "fanout", published)
		ids = append(ids, visible)
		for i, c := range clients {
			expectEvents(t, c, "admin on broker "+brokers[i].Name, ids)
			c.Quiet(t, "fanout-quiet")
		}
		// The restricted user sees only the published item's event.
		expectEvents(t, restricted, "published-only user on broker 3", []string{visible})
		restricted.Quiet(t, "fanout-restricted-quiet")

		// Redis carries events once per instance: one subscription each to
		// the events channel, however many WebSocket subscribers there are
		// (each instance's second pub/sub connection carries the cluster
		// reads' results of the groups it holds, not events).
		if n := eventSubscriptions(t, r.URL); n != len(brokers) {
			t.Fatalf("want %d subscriptions to the events channel (one per instance), got %d", len(brokers), n)
		}
	})

	// A client that disconnects, misses events and resumes with since gets
	// exactly the missed ones in order, then live ones: on the same instance
	// and on another one.
	t.Run("resume", func(t *testing.T) {
		item := createItem(t, "resume", map[string]any{"title": "r"})
		for _, to := range []*brokerProc{b2, b3} {
			c := subscribe(t, b2, adminToken, "resume", "")
			first := b1.mustPost(t, "resume", item)
			expectEvents(t, c, "before disconnect", []string{first})
			c.Conn.Close()
			missed := []string{b1.mustPost(t, "resume", item), b3.mustPost(t, "resume", item), b2.mustPost(t, "resume", item)}
			c = subscribe(t, to, adminToken, "resume", first)
			expectEvents(t, c, "resumed on broker "+to.Name, missed)
			live := b1.mustPost(t, "resume", item)
			expectEvents(t, c, "live after resume", []string{live})
			c.Quiet(t, "resume-quiet")
			c.Conn.Close()
		}
	})

	// Redis restarted (empty) mid-stream: every event a webhook acknowledged
	// reaches the connected subscribers of every instance, in order, even
	// those posted before the other instances had resubscribed; a resume
	// reaching across the lost history is told of the gap.
	t.Run("redis restart", func(t *testing.T) {
		item := createItem(t, "restart", map[string]any{"title": "x"})
		clients := make([]*brokertest.Client, 3)
		for i, b := range brokers {
			clients[i] = subscribe(t, b, adminToken, "restart", "")
		}
		var acked []string
		for i := range 6 {
			acked = append(acked, brokers[i%3].mustPost(t, "restart", item))
		}
		beforeRestart := acked[len(acked)-1]
		if err := r.Restart(t.Context()); err != nil {
			t.Fatal(err)
		}
		// Only broker 1 needs to be back; 2 and 3 catch up whatever they
		// missed while resubscribing.
		waitReady(t, b1)
		for range 6 {
			acked = append(acked, b1.mustPost(t, "restart", item))
		}
		waitReady(t, brokers...)
		for i := range 6 {
			acked = append(acked, brokers[i%3].mustPost(t, "restart", item))
		}
		for i, c := range clients {
			expectEvents(t, c, "connected through the restart on broker "+brokers[i].Name, acked)
			c.Quiet(t, "restart-quiet")
		}
		// Resuming from before the restart: the gap, then what is kept.
		c := subscribe(t, b2, adminToken, "restart", beforeRestart)
		expectGap(t, c, "resume across the restart")
		expectEvents(t, c, "kept after the restart", acked[len(acked)-historySize:])
		c.Quiet(t, "restart-resume-quiet")
		// Resuming from after it: no gap.
		c = subscribe(t, b3, adminToken, "restart", acked[len(acked)-2])
		expectEvents(t, c, "resume after the restart", acked[len(acked)-1:])
		c.Quiet(t, "restart-resume2-quiet")
	})

	// More missed events than history_size keeps: the gap is reported, then
	// the kept ones follow.
	t.Run("gap beyond retention", func(t *testing.T) {
		item := createItem(t, "retention", map[string]any{"title": "x"})
		c := subscribe(t, b1, adminToken, "retention", "")
		first := b1.mustPost(t, "retention", item)
		expectEvents(t, c, "before disconnect", []string{first})
		c.Conn.Close()
		var missed []string
		for i := range historySize + 3 {
			missed = append(missed, brokers[i%3].mustPost(t, "retention", item))
		}
		c = subscribe(t, b2, adminToken, "retention", first)
		expectGap(t, c, "resume beyond retention")
		expectEvents(t, c, "kept events", missed[len(missed)-historySize:])
		c.Quiet(t, "retention-quiet")
		// Within retention there is no gap.
		c = subscribe(t, b3, adminToken, "retention", missed[len(missed)-3])
		expectEvents(t, c, "resume within retention", missed[len(missed)-2:])
		c.Quiet(t, "retention-quiet2")
	})

	// An instance killed: its client reconnects to another and resumes from
	// its last id without loss.
	t.Run("instance killed", func(t *testing.T) {
		item := createItem(t, "failover", map[string]any{"title": "x"})
		c := subscribe(t, b3, adminToken, "failover", "")
		seen := []string{b1.mustPost(t, "failover", item), b3.mustPost(t, "failover", item)}
		expectEvents(t, c, "before the kill", seen)
		b3.Kill(t)
		c.Closed(t)
		missed := []string{b1.mustPost(t, "failover", item), b2.mustPost(t, "failover", item)}
		c = subscribe(t, b2, adminToken, "failover", seen[len(seen)-1])
		expectEvents(t, c, "resumed on broker 2", missed)
		live := b1.mustPost(t, "failover", item)
		expectEvents(t, c, "live on broker 2", []string{live})
		c.Quiet(t, "failover-quiet")
	})

	// A client resuming on an instance started after the events it missed
	// (a rolling deploy) gets them from Redis too.
	t.Run("resume on a fresh instance", func(t *testing.T) {
		item := createItem(t, "fresh", map[string]any{"title": "x"})
		c := subscribe(t, b1, adminToken, "fresh", "")
		first := b1.mustPost(t, "fresh", item)
		expectEvents(t, c, "before disconnect", []string{first})
		c.Conn.Close()
		missed := []string{b2.mustPost(t, "fresh", item), b1.mustPost(t, "fresh", item)}
		b4 := startBroker(t, "4", env)
		c = subscribe(t, b4, adminToken, "fresh", first)
		expectEvents(t, c, "resumed on the fresh broker 4", missed)
		c.Quiet(t, "fresh-quiet")
	})
}

// eventSubscriptions counts the subscriptions to the bus's events channel.
func eventSubscriptions(t testing.TB, url string) int {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	defer c.Close()
	n, err := c.PubSubNumSub(t.Context(), "directus-ws-broker:events").Result()
	if err != nil {
		t.Fatal(err)
	}
	return int(n["directus-ws-broker:events"])
}

// TestRedisOutageWebhook: while Redis is down the webhook answers 503 (the
// Flow logs a failure), /readyz reports it, sockets stay open, a resume
// (since) is refused naming its subscription — never acknowledged and then
// dropped — and logged and counted; after Redis is back everything works
// again without restarting the broker.
func TestRedisOutageWebhook(t *testing.T) {
	requireDirectus(t)
	r := redistest.Require(t)
	b := startBroker(t, "1", map[string]string{"BUS": "redis", "REDIS_URL": r.URL})
	item := createItem(t, "fanout", map[string]any{"title": "x", "status": "published"})
	c := subscribe(t, b, adminToken, "fanout", "")
	seen := b.mustPost(t, "fanout", item)
	expectEvents(t, c, "before the outage", []string{seen})
	if err := r.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if status, _ := b.post(t, "fanout", "update", item); status != http.StatusServiceUnavailable {
		t.Fatalf("webhook while Redis is down: want 503, got %d", status)
	}
	if b.ready() {
		t.Fatal("/readyz answers 200 while Redis is down")
	}
	c.Quiet(t, "outage-socket-open")

	resuming := brokertest.Dial(t, b.WSURL, adminToken)
	f := resuming.Request(t, map[string]any{"type": "subscribe", "collection": "fanout", "uid": "resume", "since": seen})
	data, _ := f["data"].(map[string]any)
	if f["type"] != "ERROR" || f["uid"] != "resume" || data["collection"] != "fanout" || data["status"] != float64(503) {
		t.Fatalf("resume while Redis is down: want an ERROR naming the subscription, got %v", f)
	}
	resuming.Quiet(t, "no-late-ack")
	logged, _ := os.ReadFile(b.log)
	if !strings.Contains(string(logged), "subscribe failed") || !strings.Contains(string(logged), `"collection":"fanout"`) {
		t.Fatalf("the failed resume was not logged:\n%s", logged)
	}
	if m := b.metrics(t); !strings.Contains(m, `broker_operation_failures_total{code="SERVICE_UNAVAILABLE",operation="subscribe"} 1`) {
		t.Fatalf("the failed resume was not counted:\n%s", m)
	}
	if err := r.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitReady(t, b)
	id := b.mustPost(t, "fanout", item)
	expectEvents(t, c, "after the outage", []string{id})
}

// TestResumeMemory: the memory bus (one process) resumes exactly, and an id
// of an earlier process is reported as a gap.
func TestResumeMemory(t *testing.T) {
	requireDirectus(t)
	env := map[string]string{"BUS": "memory"}
	b := startBroker(t, "memory", env)
	item := createItem(t, "memory", map[string]any{"title": "x"})
	c := subscribe(t, b, adminToken, "memory", "")
	first := b.mustPost(t, "memory", item)
	expectEvents(t, c, "before disconnect", []string{first})
	c.Conn.Close()
	missed := []string{b.mustPost(t, "memory", item), b.mustPost(t, "memory", item), b.mustPost(t, "memory", item)}
	c = subscribe(t, b, adminToken, "memory", first)
	expectEvents(t, c, "resumed", missed)
	live := b.mustPost(t, "memory", item)
	expectEvents(t, c, "live after resume", []string{live})
	c.Quiet(t, "memory-quiet")

	// A new process: its ids have another epoch, so the old id is a gap.
	b.Stop(t)
	c.Closed(t)
	b = startBroker(t, "memory-2", env)
	c = subscribe(t, b, adminToken, "memory", live)
	expectGap(t, c, "resume with an id of the previous process")
	next := b.mustPost(t, "memory", item)
	expectEvents(t, c, "live after the gap", []string{next})
}
