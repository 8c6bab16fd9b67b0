package redisbus

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"
)

// runCluster starts a Cluster of a bus on url announcing keys; it stops
// (and withdraws) at the test's end.
func runCluster(t *testing.T, url string, keys ...string) *Cluster {
	t.Helper()
	b := startRedisBus(t, url, Options{})
	c := b.NewCluster(ClusterOptions{Holders: HoldersOptions{TTL: 600 * time.Millisecond, Refresh: 100 * time.Millisecond}, Timeout: 300 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, func() []string { return keys }) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

// until polls cond (each announce moves the views forward) for at most 10s.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling the views, refreshed by the clusters' own announces
	}
}

// Two instances on a real Redis holding one group: exactly one reads; its
// results reach the other (also when they come before it asks); while
// its heartbeats come the other waits past the timeout; without results it
// gives up after the timeout; once the reader leaves, the other reads.
func TestClusterResultsOverRedis(t *testing.T) {
	r := redistest.Require(t)
	const key = "articles\x00r:reader\x00{}\x00fp"
	a, b := runCluster(t, r.URL, key), runCluster(t, r.URL, key)
	until(t, "both see both, settled", func() bool {
		return len(a.holders.Live(groupHash(key))) == 2 && len(b.holders.Live(groupHash(key))) == 2 &&
			a.holders.Settled(groupHash(key)) && b.holders.Settled(groupHash(key))
	})
	reader, other := a, b
	if !a.Reads(key) {
		reader, other = b, a
	}
	if !reader.Reads(key) || other.Reads(key) || !reader.Publishes(key) || other.Publishes(key) {
		t.Fatalf("reads: %v %v, publishes: %v %v", reader.Reads(key), other.Reads(key), reader.Publishes(key), other.Publishes(key))
	}
	ctx := context.Background()

	// A result published before the other asks is kept for it.
	want := broker.Result{EventID: "1-0", Items: map[string]json.RawMessage{"7": json.RawMessage(`{"id":7}`)}}
	reader.Publish(key, []broker.Result{want})
	got, ok := other.Await(ctx, key, []string{"1-0"})
	if !ok || !reflect.DeepEqual(got["1-0"], want) {
		t.Fatalf("await: %v %+v", ok, got)
	}

	// Heartbeats keep the other waiting past its timeout (300 ms).
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		for range 8 {
			reader.Reading(key)
			time.Sleep(100 * time.Millisecond) // the reader's read takes 800 ms
		}
		reader.Publish(key, []broker.Result{{EventID: "2-0"}})
	}()
	start := time.Now()
	if _, ok := other.Await(ctx, key, []string{"2-0"}); !ok || time.Since(start) < 700*time.Millisecond {
		t.Fatalf("a slow reader's result: %v after %s", ok, time.Since(start))
	}
	<-beats

	// No result, no heartbeat: given up after the timeout.
	start = time.Now()
	if _, ok := other.Await(ctx, key, []string{"3-0"}); ok || time.Since(start) > 2*time.Second {
		t.Fatalf("a result that never comes: %v after %s", ok, time.Since(start))
	}
	// A failed read is no result.
	reader.Publish(key, []broker.Result{{EventID: "4-0", Failed: true}})
	if _, ok := other.Await(ctx, key, []string{"4-0"}); ok {
		t.Fatal("a failed read was taken as a result")
	}
}

// A wait that timed out makes the reader a suspect: the holder reads for
// itself (no wait per batch) until the reader is heard from again.
func TestClusterSuspectReader(t *testing.T) {
	r := redistest.Require(t)
	const key = "suspect"
	a, b := runCluster(t, r.URL, key), runCluster(t, r.URL, key)
	until(t, "settled", func() bool { return a.holders.Settled(groupHash(key)) && b.holders.Settled(groupHash(key)) })
	reader, other := a, b
	if !a.Reads(key) {
		reader, other = b, a
	}
	if other.Reads(key) {
		t.Fatal("both read")
	}
	if _, ok := other.Await(context.Background(), key, []string{"9-0"}); ok {
		t.Fatal("a result that never came")
	}
	if !other.Reads(key) {
		t.Fatal("after a timeout the holder still waits for the silent reader")
	}
	reader.Reading(key)
	until(t, "the reader heard from again", func() bool { return !other.Reads(key) })
}
