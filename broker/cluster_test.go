package broker

import (
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// fakeCluster is one instance's view of a cluster. As a holder that does
// not read (reads false), Await tells awaited which events it waits for
// and returns what is sent on results (nil: no result in time).
type fakeCluster struct {
	reads, publishes bool
	readsFor         func(key string) bool // when set, overrides reads
	awaited          chan []string
	results          chan map[string]Result

	mu        sync.Mutex
	published []Result
	beats     int
}

func (f *fakeCluster) Reads(key string) bool {
	if f.readsFor != nil {
		return f.readsFor(key)
	}
	return f.reads
}
func (f *fakeCluster) Publishes(string) bool { return f.publishes }
func (f *fakeCluster) Reading(string) {
	f.mu.Lock()
	f.beats++
	f.mu.Unlock()
}

func (f *fakeCluster) Publish(_ string, rs []Result) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.published = append(f.published, rs...)
}

func (f *fakeCluster) Await(ctx context.Context, _ string, ids []string) (map[string]Result, bool) {
	f.awaited <- ids
	select {
	case rs := <-f.results:
		return rs, rs != nil
	case <-ctx.Done():
		return nil, false
	}
}

// A holder that is not the reader delivers the reader's result as if it
// had read it, and reads nothing itself.
func TestClusterDeliversTheReadersResult(t *testing.T) {
	fc := &fakeCluster{awaited: make(chan []string, 1), results: make(chan map[string]Result, 1)}
	r := newRig(t, Options{Cluster: fc})
	r.reader.set("1", `{"id":1,"local":true}`)
	_, sink := r.sub(t, "a", AttachOptions{})
	ev := r.publish(t, update("1"))
	if ids := <-fc.awaited; !reflect.DeepEqual(ids, []string{ev[0].ID}) {
		t.Fatalf("awaited %v", ids)
	}
	fc.results <- map[string]Result{ev[0].ID: {EventID: ev[0].ID, Items: map[string]json.RawMessage{"1": json.RawMessage(`{"id":1,"remote":true}`)}}}
	r.drain(t)
	want := []string{"ack", `update:1:[{"id":1,"remote":true}]:` + ev[0].ID}
	if got := sink.got(); !reflect.DeepEqual(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
	if n := r.reader.reads.Load(); n != 0 {
		t.Fatalf("%d reads here", n)
	}
	if m := r.b.Metrics(); m.ClusterResults != 1 || m.Reads != 0 {
		t.Fatalf("metrics %+v", m)
	}
}

// No result in time (the reader died, stalled or failed): the holder
// reads itself, once, and delivers that.
func TestClusterTakeover(t *testing.T) {
	fc := &fakeCluster{awaited: make(chan []string, 1), results: make(chan map[string]Result, 1)}
	r := newRig(t, Options{Cluster: fc})
	r.reader.set("1", `{"id":1,"local":true}`)
	_, sink := r.sub(t, "a", AttachOptions{})
	ev := r.publish(t, update("1"))
	<-fc.awaited
	fc.results <- nil
	r.drain(t)
	want := []string{"ack", `update:1:[{"id":1,"local":true}]:` + ev[0].ID}
	if got := sink.got(); !reflect.DeepEqual(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
	if m := r.b.Metrics(); m.ClusterTakeovers != 1 || m.Reads != 1 {
		t.Fatalf("metrics %+v", m)
	}
}

// The reader publishes each event's items for the others, with a
// heartbeat while it reads; a key its group may not read is not in them,
// and deletes are not published (no read).
func TestClusterReaderPublishes(t *testing.T) {
	fc := &fakeCluster{reads: true, publishes: true}
	r := newRig(t, Options{Cluster: fc})
	r.reader.set("1", `{"id":1}`)
	r.reader.set("2", `{"id":2}`)
	r.reader.allow("a", "1")
	_, sink := r.sub(t, "a", AttachOptions{})
	ev := r.publish(t, update("1"), update("2"))
	r.drain(t)
	r.publish(t, Event{Action: ActionDelete, Collection: "c", Keys: []string{"1"}})
	r.drain(t)
	sink.waitN(t, 3)
	fc.mu.Lock()
	defer fc.mu.Unlock()
	want := []Result{{EventID: ev[0].ID, Items: map[string]json.RawMessage{"1": json.RawMessage(`{"id":1}`)}}, {EventID: ev[1].ID}}
	if !reflect.DeepEqual(fc.published, want) {
		t.Fatalf("published %+v, want %+v", fc.published, want)
	}
	if fc.beats == 0 {
		t.Fatal("no heartbeat while reading")
	}
}

// A group waiting for the reader's results holds no read slot: with one
// slot, another group's read goes on meanwhile (were the slot held, two
// instances waiting for each other's reads would both starve until the
// timeout).
func TestClusterWaitHoldsNoReadSlot(t *testing.T) {
	fc := &fakeCluster{awaited: make(chan []string, 1), results: make(chan map[string]Result, 1),
		readsFor: func(key string) bool { return strings.Contains(key, "token:b") }}
	r := newRig(t, Options{Cluster: fc, ReadConcurrency: 1})
	r.reader.set("1", `{"id":1}`)
	_, sa := r.sub(t, "a", AttachOptions{}) // waits for the reader elsewhere
	_, sb := r.sub(t, "b", AttachOptions{}) // reads here
	ev := r.publish(t, update("1"))
	<-fc.awaited // a's group waits for event 1's result…
	sb.waitN(t, 2)
	ev2 := r.publish(t, update("1"))
	sb.waitN(t, 3) // …and b's read of event 2 needs the one slot meanwhile
	fc.results <- map[string]Result{ev[0].ID: {EventID: ev[0].ID, Items: map[string]json.RawMessage{"1": json.RawMessage(`{"id":1}`)}}}
	<-fc.awaited
	fc.results <- map[string]Result{ev2[0].ID: {EventID: ev2[0].ID, Items: map[string]json.RawMessage{"1": json.RawMessage(`{"id":1}`)}}}
	r.drain(t)
	if got := sa.got(); len(got) != 3 {
		t.Fatalf("a: %v", got)
	}
}
