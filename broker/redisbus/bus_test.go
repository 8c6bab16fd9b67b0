package redisbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// testRedisBus is a started Bus and what it handed on.
type testRedisBus struct {
	*Bus
	got chan broker.Event
}

func startRedisBus(t testing.TB, url string, opts Options) *testRedisBus {
	t.Helper()
	opts.URL = url
	b, err := New(opts, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	tb := &testRedisBus{Bus: b, got: make(chan broker.Event, 100000)}
	if err := b.Start(broker.DispatchFunc(func(e broker.Event) { tb.got <- e })); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return tb
}

// next returns the next event handed on, failing after a generous wait.
func (b *testRedisBus) next(t testing.TB) broker.Event {
	t.Helper()
	select {
	case e := <-b.got:
		return e
	case <-time.After(15 * time.Second):
		t.Fatal("no event handed on within 15s")
	}
	return broker.Event{}
}

// expectAll checks that each bus hands on exactly ids next, in order, and
// then nothing until a marker event published through pub proves it.
func expectAll(t testing.TB, pub *testRedisBus, buses []*testRedisBus, ids []string) {
	t.Helper()
	marker := redisPublish(t, pub, "marker")[0].ID
	for n, b := range buses {
		for _, want := range ids {
			if e := b.next(t); e.ID != want {
				t.Fatalf("bus %d: want event %s, got %s (%+v)", n, want, e.ID, e)
			}
		}
		if e := b.next(t); e.ID != marker {
			t.Fatalf("bus %d: want only %v, then the marker %s; got %s (%+v)", n, ids, marker, e.ID, e)
		}
	}
}

func redisPublish(t testing.TB, b *testRedisBus, collections ...string) []broker.Event {
	t.Helper()
	events := make([]broker.Event, len(collections))
	for i, c := range collections {
		events[i] = broker.Event{Action: broker.ActionUpdate, Collection: c, Keys: []string{fmt.Sprint(i + 1)}, Payload: json.RawMessage(`{"n":1}`)}
	}
	if err := b.Publish(t.Context(), events); err != nil {
		t.Fatalf("publish: %v", err)
	}
	return events
}

func redisIDs(events []broker.Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.ID
	}
	return out
}

// waitFor polls cond until it holds, failing after a bounded deadline.
func redisWaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func redisReady(b *testRedisBus) func() bool {
	return func() bool { return b.Ready(context.Background()) == nil }
}

func redisAdmin(t testing.TB, url string) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestRedisBusDeliversToEveryInstance: a batch published on one instance
// reaches every instance once, in order, with the IDs Publish assigned.
func TestRedisBusDeliversToEveryInstance(t *testing.T) {
	r := redistest.Require(t)
	a := startRedisBus(t, r.URL, Options{})
	b := startRedisBus(t, r.URL, Options{})
	sent := redisPublish(t, a, "x", "y", "x")
	for i, e := range sent {
		if !broker.ValidID(e.ID) || (i > 0 && broker.CompareIDs(sent[i-1].ID, e.ID) >= 0) {
			t.Fatalf("IDs must be valid and increasing: %v", redisIDs(sent))
		}
	}
	for _, bus := range []*testRedisBus{a, b} {
		for _, want := range sent {
			got := bus.next(t)
			if got.ID != want.ID || got.Collection != want.Collection || got.Action != want.Action ||
				!slices.Equal(got.Keys, want.Keys) || string(got.Payload) != string(want.Payload) {
				t.Fatalf("want %+v, got %+v", want, got)
			}
		}
	}
	expectAll(t, a, []*testRedisBus{a, b}, nil)
	if err := a.Ready(t.Context()); err != nil {
		t.Fatalf("ready: %v", err)
	}
}

// TestRedisBusHistory: events of one collection after an ID, in order; no
// gap within retention; a gap for an ID from before the data generation.
func TestRedisBusHistory(t *testing.T) {
	r := redistest.Require(t)
	a := startRedisBus(t, r.URL, Options{})
	sent := redisPublish(t, a, "x", "x", "y", "x")
	cases := []struct {
		coll, since string
		want        []string
		gap         bool
	}{
		{"x", sent[0].ID, []string{sent[1].ID, sent[3].ID}, false},
		{"x", sent[2].ID, []string{sent[3].ID}, false}, // an ID of another collection
		{"x", sent[3].ID, nil, false},
		{"y", sent[0].ID, []string{sent[2].ID}, false},
		{"z", sent[0].ID, nil, false},                                    // nothing ever published
		{"x", "1-0", []string{sent[0].ID, sent[1].ID, sent[3].ID}, true}, // before this generation
	}
	for _, c := range cases {
		got, gap, err := a.History(t.Context(), c.coll, c.since)
		if err != nil {
			t.Fatalf("history %s since %s: %v", c.coll, c.since, err)
		}
		if !slices.Equal(redisIDs(got), c.want) || gap != c.gap {
			t.Errorf("history %s since %s: got %v gap %v, want %v gap %v", c.coll, c.since, redisIDs(got), gap, c.want, c.gap)
		}
	}
}

// TestRedisBusHistoryRetention: exactly HistorySize events are kept per
// collection, and a gap is reported exactly when a dropped event is after
// since.
func TestRedisBusHistoryRetention(t *testing.T) {
	r := redistest.Require(t)
	a := startRedisBus(t, r.URL, Options{HistorySize: 3})
	sent := redisPublish(t, a, "x", "x", "x", "x", "x")
	other := redisPublish(t, a, "y") // other collections do not push x's events out
	cases := []struct {
		since string
		want  []string
		gap   bool
	}{
		{sent[0].ID, redisIDs(sent[2:]), true}, // sent[1] is gone
		{sent[1].ID, redisIDs(sent[2:]), false},
		{sent[3].ID, redisIDs(sent[4:]), false},
		{other[0].ID, nil, false},
	}
	for _, c := range cases {
		got, gap, err := a.History(t.Context(), "x", c.since)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(redisIDs(got), c.want) || gap != c.gap {
			t.Errorf("since %s: got %v gap %v, want %v gap %v", c.since, redisIDs(got), gap, c.want, c.gap)
		}
	}
}

// TestRedisBusHistoryMaxAge: events older than HistoryMaxAge are dropped
// and reported as a gap.
func TestRedisBusHistoryMaxAge(t *testing.T) {
	r := redistest.Require(t)
	a := startRedisBus(t, r.URL, Options{HistoryMaxAge: time.Hour})
	sent := redisPublish(t, a, "x", "x")
	if got, gap, err := a.History(t.Context(), "x", sent[0].ID); err != nil || gap || len(got) != 1 {
		t.Fatalf("fresh events: got %v gap %v err %v", redisIDs(got), gap, err)
	}
	a.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	got, gap, err := a.History(t.Context(), "x", sent[0].ID)
	if err != nil || !gap || len(got) != 0 {
		t.Fatalf("after max age: got %v gap %v err %v, want nothing and a gap", redisIDs(got), gap, err)
	}
}

// TestRedisBusRedisRestart: while Redis is down Publish fails with
// broker.ErrBusUnavailable and Ready reports it; after Redis comes back empty every
// instance resubscribes on its own, every acknowledged event reaches every
// instance exactly once, in order, and a resume across the restart reports
// a gap.
func TestRedisBusRedisRestart(t *testing.T) {
	r := redistest.Require(t)
	a := startRedisBus(t, r.URL, Options{})
	b := startRedisBus(t, r.URL, Options{})
	var acked []string
	for round := range 3 {
		for range 5 {
			acked = append(acked, redisPublish(t, a, "x")[0].ID)
		}
		switch round {
		case 0:
			// Restart with no pause: the buses may not even notice the
			// server was gone before it is back.
			if err := r.Restart(t.Context()); err != nil {
				t.Fatal(err)
			}
		case 1:
			if err := r.Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
			err := a.Publish(t.Context(), []broker.Event{{Action: broker.ActionCreate, Collection: "x", Keys: []string{"1"}}})
			if !errors.Is(err, broker.ErrBusUnavailable) {
				t.Fatalf("publish while Redis is down: want broker.ErrBusUnavailable, got %v", err)
			}
			if a.Ready(t.Context()) == nil {
				t.Fatal("ready while Redis is down")
			}
			if err := r.Restart(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		redisWaitFor(t, "a ready again", redisReady(a))
		redisWaitFor(t, "b ready again", redisReady(b))
	}
	expectAll(t, a, []*testRedisBus{a, b}, acked)
	got, gap, err := a.History(t.Context(), "x", acked[0])
	if err != nil || !gap {
		t.Fatalf("resume across a restart: got %v gap %v err %v, want a gap", redisIDs(got), gap, err)
	}
}

// TestRedisBusCatchUpAfterSubscriptionLoss: subscriptions killed by Redis
// (as for a client over its output buffer limit) are re-established and
// whatever was published meanwhile is caught up from the stream, without
// duplicates.
func TestRedisBusCatchUpAfterSubscriptionLoss(t *testing.T) {
	r := redistest.Require(t)
	a := startRedisBus(t, r.URL, Options{})
	b := startRedisBus(t, r.URL, Options{})
	admin := redisAdmin(t, r.URL)
	var acked []string
	for range 20 {
		if err := admin.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, redisIDs(redisPublish(t, a, "x", "y"))...)
	}
	expectAll(t, a, []*testRedisBus{a, b}, acked)
}

// TestRedisBusFlushAll: data replaced under live connections is noticed by
// the generation carried in every message.
func TestRedisBusFlushAll(t *testing.T) {
	r := redistest.Require(t)
	a := startRedisBus(t, r.URL, Options{})
	b := startRedisBus(t, r.URL, Options{})
	before := redisPublish(t, a, "x")
	// The flush must come in a later millisecond than before's ID (see the
	// known limit in History); Redis's clock decides, so wait for it.
	admin := redisAdmin(t, r.URL)
	ms, _, _ := strings.Cut(before[0].ID, "-")
	beforeMs, _ := strconv.ParseUint(ms, 10, 64)
	for deadline := time.Now().Add(5 * time.Second); ; {
		now, err := admin.Time(t.Context()).Result()
		if err != nil {
			t.Fatal(err)
		}
		if uint64(now.UnixMilli()) > beforeMs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Redis's clock did not move on")
		}
	}
	if err := admin.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	after := redisPublish(t, a, "x", "x")
	expectAll(t, a, []*testRedisBus{a, b}, append(redisIDs(before), redisIDs(after)...))
	if _, gap, err := a.History(t.Context(), "x", before[0].ID); err != nil || !gap {
		t.Fatalf("resume across a flush: gap %v err %v, want a gap", gap, err)
	}
}

// TestRedisBusStartWithoutRedis: an instance starting while Redis is down
// serves anyway, reports not ready, and works once Redis is there.
func TestRedisBusStartWithoutRedis(t *testing.T) {
	r := redistest.Require(t)
	if err := r.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := startRedisBus(t, r.URL, Options{StartWait: 50 * time.Millisecond})
	if a.Ready(t.Context()) == nil {
		t.Fatal("ready without Redis")
	}
	if err := r.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	redisWaitFor(t, "ready", redisReady(a))
	sent := redisPublish(t, a, "x")
	expectAll(t, a, []*testRedisBus{a}, redisIDs(sent))
}

// TestRedisBusClose: Close is idempotent, also without Start.
func TestRedisBusClose(t *testing.T) {
	b, err := New(Options{URL: "redis://127.0.0.1:1/0"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(broker.DispatchFunc(func(broker.Event) {})); err == nil {
		t.Fatal("Start after Close must fail")
	}
	if _, err := New(Options{URL: "http://x"}, zerolog.Nop()); err == nil {
		t.Fatal("a non-redis URL must be refused")
	}
}

// BenchmarkRedisBusRoundTrip measures Publish → handle through a local
// Redis, one event at a time, on the publishing instance and on another.
func BenchmarkRedisBusRoundTrip(b *testing.B) {
	r := redistest.Require(b)
	for _, name := range []string{"same-instance", "other-instance"} {
		b.Run(name, func(b *testing.B) {
			pub := startRedisBus(b, r.URL, Options{Prefix: name + ":"})
			sub := pub
			if name == "other-instance" {
				sub = startRedisBus(b, r.URL, Options{Prefix: name + ":"})
			}
			e := []broker.Event{{Action: broker.ActionUpdate, Collection: "x", Keys: []string{"1"}, Payload: json.RawMessage(`{"title":"bench"}`)}}
			b.ResetTimer()
			for b.Loop() {
				if err := pub.Publish(context.Background(), e); err != nil {
					b.Fatal(err)
				}
				if got := sub.next(b); got.ID != e[0].ID {
					b.Fatalf("want %s, got %s", e[0].ID, got.ID)
				}
				if sub != pub {
					<-pub.got
				}
			}
		})
	}
}
