package broker

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// An item written after the snapshot was read, whose event is dispatched
// before Subscribe returns, must reach the subscriber after the snapshot.
// (Subscribe used to read the snapshot before attaching: such an event was
// in neither.)
func TestSubscribeSnapshotThenLiveWithoutGap(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("7", `{"id":7}`)
	sink := newRecSink()
	s := NewSubscription("c", Credentials{Token: "a"}, nil, 0, nil, sink, textEncoder{})
	var ev []Event
	snapshot := func(context.Context) (Snapshot, error) {
		// The snapshot is read; then item 7 is written and its event is
		// published and dispatched, all before the subscription is acked.
		data := json.RawMessage(`[]`)
		ev = r.publish(t, create("7"))
		r.drain(t)
		return Snapshot{Data: data}, nil
	}
	if err := r.b.Subscribe(context.Background(), s, AttachOptions{Snapshot: snapshot}); err != nil {
		t.Fatal(err)
	}
	want := []string{"ack+init", "init:[]", `create:7:[{"id":7}]:` + ev[0].ID}
	if got := sink.got(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// With since and a snapshot: ack, the replayed (older) events, the snapshot
// (read after them), then live events.
func TestSubscribeSinceAndInitOrder(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("1", `{"id":1}`)
	first := r.publish(t, update("1"))
	missed := r.publish(t, update("1"))
	r.drain(t)
	sink := newRecSink()
	s := NewSubscription("c", Credentials{Token: "a"}, nil, 0, nil, sink, textEncoder{})
	var live []Event
	snapshot := func(context.Context) (Snapshot, error) {
		live = r.publish(t, update("1"))
		r.drain(t)
		return Snapshot{Data: json.RawMessage(`[{"id":1}]`)}, nil
	}
	if err := r.b.Subscribe(context.Background(), s, AttachOptions{Since: first[0].ID, Snapshot: snapshot}); err != nil {
		t.Fatal(err)
	}
	want := []string{"ack+init", `update:1:[{"id":1}]:` + missed[0].ID, `init:[{"id":1}]`, `update:1:[{"id":1}]:` + live[0].ID}
	if got := sink.got(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

// A subscription whose snapshot or history cannot be read is never
// acknowledged and receives nothing afterwards.
func TestSubscribeFailureIsNeverAcked(t *testing.T) {
	r := newRig(t, Options{})
	for name, opts := range map[string]AttachOptions{
		"snapshot": {Snapshot: func(context.Context) (Snapshot, error) { return Snapshot{}, errors.New("forbidden") }},
		"history":  {Since: "1-1"},
	} {
		t.Run(name, func(t *testing.T) {
			if name == "history" {
				r.bus.failHistory = errors.New("redis down")
				defer func() { r.bus.failHistory = nil }()
			}
			sink := newRecSink()
			s := NewSubscription("c", Credentials{Token: "a"}, nil, 0, nil, sink, textEncoder{})
			if err := r.b.Subscribe(context.Background(), s, opts); err == nil {
				t.Fatal("Subscribe succeeded")
			}
			r.publish(t, update("1"))
			r.drain(t)
			if got := sink.got(); len(got) != 0 {
				t.Fatalf("a failed subscription got %v", got)
			}
			if subs, _ := r.b.index.size(); subs != 0 {
				t.Fatalf("%d subscriptions left attached", subs)
			}
		})
	}
}

// Live frames held back during setup are bounded in bytes; those that do not
// fit are reported with the first missed id.
func TestHeldFramesBoundedInBytes(t *testing.T) {
	r := newRig(t, Options{MaxHeldBytes: 100})
	r.reader.set("1", `{"id":1,"pad":"`+strings.Repeat("x", 30)+`"}`)
	sink := newRecSink()
	s := NewSubscription("c", Credentials{Token: "a"}, nil, 0, nil, sink, textEncoder{})
	var ev []Event
	snapshot := func(context.Context) (Snapshot, error) {
		ev = r.publish(t, update("1"), update("1"), update("1"), update("1"))
		r.drain(t)
		return Snapshot{Data: json.RawMessage(`[]`)}, nil
	}
	if err := r.b.Subscribe(context.Background(), s, AttachOptions{Snapshot: snapshot}); err != nil {
		t.Fatal(err)
	}
	got := sink.got()
	// Each frame is ~60 bytes: one fits in 100.
	if len(got) != 4 || !strings.HasPrefix(got[2], "update:1:") || got[3] != "notice:EVENTS_MISSED:"+ev[1].ID+":3" {
		t.Fatalf("got %v", got)
	}
}

// The frames held back are bounded for the whole process too (issue 19.6):
// a second subscription being set up while the first holds most of the
// budget has its live frames reported missed, however small its own bound,
// and the budget is whole again once both are set up.
func TestHeldFramesBoundedAcrossSubscriptions(t *testing.T) {
	r := newRig(t, Options{MaxHeldBytes: 1000, HeldBytes: 100})
	r.reader.set("1", `{"id":1,"pad":"`+strings.Repeat("x", 30)+`"}`)
	first, second := newRecSink(), newRecSink()
	s1 := NewSubscription("c", Credentials{Token: "a"}, nil, 0, nil, first, textEncoder{})
	s2 := NewSubscription("c", Credentials{Token: "a"}, nil, 0, nil, second, textEncoder{})
	var ev1, ev2 []Event
	snapshot2 := func(context.Context) (Snapshot, error) {
		ev2 = r.publish(t, update("1"))
		r.drain(t)
		return Snapshot{Data: json.RawMessage(`[]`)}, nil
	}
	snapshot1 := func(ctx context.Context) (Snapshot, error) {
		ev1 = r.publish(t, update("1")) // s1 holds ~60 of the 100 bytes
		r.drain(t)
		if held := r.b.Held(); held <= 0 || held > 100 {
			t.Errorf("held %d bytes, want 1..100", held)
		}
		if err := r.b.Subscribe(ctx, s2, AttachOptions{Snapshot: snapshot2}); err != nil {
			return Snapshot{}, err
		}
		return Snapshot{Data: json.RawMessage(`[]`)}, nil
	}
	if err := r.b.Subscribe(context.Background(), s1, AttachOptions{Snapshot: snapshot1}); err != nil {
		t.Fatal(err)
	}
	missed := "notice:EVENTS_MISSED:" + ev2[0].ID + ":1"
	if got := second.got(); len(got) != 3 || got[2] != missed {
		t.Fatalf("second subscription got %v, want ack, init, %s", got, missed)
	}
	if got := first.got(); len(got) != 4 || !strings.HasPrefix(got[2], "update:1:") || got[3] != missed {
		t.Fatalf("first subscription got %v, want ack, init, the update of %s, %s", got, ev1[0].ID, missed)
	}
	if held := r.b.Held(); held != 0 {
		t.Fatalf("%d bytes still counted as held after both were set up", held)
	}
}

// A replay reads with the subscriber's own token and follows the live
// group's delete rule: a delete the live subscription would withhold (its
// group's latest read showed the key hidden) is withheld in a resume too.
func TestReplayFollowsLiveDeleteRule(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("1", `{"id":1}`)
	r.reader.allow("a") // a sees nothing
	_, _ = r.sub(t, "a", AttachOptions{})
	start := r.publish(t, update("1")) // a's group learns 1 is hidden
	r.drain(t)
	r.publish(t, del("1"))
	r.drain(t)
	_, sink := r.sub(t, "a", AttachOptions{Since: start[0].ID})
	if got := sink.got(); !reflect.DeepEqual(got, []string{"ack"}) {
		t.Fatalf("resume got %v: the delete of a key hidden from the group must be withheld", got)
	}
}

// A full dispatch queue answers Publish at once with ErrQueueFull, takes
// none of the batch, and does not hold up other collections.
func TestPublishQueueFull(t *testing.T) {
	r := newRig(t, Options{Shards: 2, QueueSize: 2, GroupBacklog: 1})
	r.reader.set("1", `{"id":1}`)
	r.reader.gate = make(chan struct{})
	r.reader.started = make(chan string, 100)
	defer close(r.reader.gate)
	_, _ = r.sub(t, "a", AttachOptions{})
	r.publish(t, update("1"))
	<-r.reader.started                      // the group's read of "c" is held
	other := otherShardCollection(r.b, "c") // a collection on the other worker
	// One event waits in the group's pipeline; the next one holds the
	// worker (the pipeline is full); two fill the queue.
	g := r.b.index.groups("c")[0]
	r.publish(t, update("1"))
	for pending(g) < 1 {
		runtime.Gosched()
	}
	r.publish(t, update("1"))
	for r.b.Metrics().QueueDepth > 0 { // the worker took it and waits
		runtime.Gosched()
	}
	r.publish(t, update("1"), update("1"))
	done := make(chan error, 1)
	go func() {
		done <- r.b.Publish(context.Background(), []Event{{Action: ActionUpdate, Collection: "c", Keys: []string{"1"}, Payload: json.RawMessage(`{}`)}})
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publish to a full queue blocked")
	}
	if !errors.Is(err, ErrQueueFull) || !errors.Is(err, ErrBusUnavailable) {
		t.Fatalf("publish to a full queue: %v", err)
	}
	// All or none: a batch touching the full queue is refused whole.
	batch := []Event{
		{Action: ActionUpdate, Collection: other, Keys: []string{"1"}, Payload: json.RawMessage(`{}`)},
		{Action: ActionUpdate, Collection: "c", Keys: []string{"1"}, Payload: json.RawMessage(`{}`)},
	}
	if err := r.b.Publish(context.Background(), batch); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("mixed batch: %v", err)
	}
	if m := r.b.Metrics(); m.QueueDepth != 2 {
		t.Fatalf("queue depth %d after a refused batch, want 2", m.QueueDepth)
	}
	// Another collection is not held up.
	if err := r.b.Publish(context.Background(), batch[:1]); err != nil {
		t.Fatalf("other collection: %v", err)
	}
}

func pending(g *group) int {
	g.pipe.mu.Lock()
	defer g.pipe.mu.Unlock()
	return len(g.pipe.pending)
}

func otherShardCollection(b *Broker, coll string) string {
	for _, c := range []string{"d", "e", "f", "g", "h", "i", "j"} {
		if b.shardIndex(c) != b.shardIndex(coll) {
			return c
		}
	}
	panic("no collection on another shard")
}

// A create of an item the snapshot already holds is a duplicate (its event
// was on its way through the Flow when the snapshot was read): it is
// dropped, held back or live, until a delete of that key is seen.
func TestNoCreateAfterInitHoldsIt(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("7", `{"id":7}`)
	r.reader.set("8", `{"id":8}`)
	sink := newRecSink()
	s := NewSubscription("c", Credentials{Token: "a"}, nil, 0, nil, sink, textEncoder{})
	snapshot := func(context.Context) (Snapshot, error) {
		r.publish(t, create("7")) // held back: the snapshot shows 7
		r.drain(t)
		return Snapshot{Data: json.RawMessage(`[{"id":7}]`), Keys: []string{"7"}}, nil
	}
	if err := r.b.Subscribe(context.Background(), s, AttachOptions{Snapshot: snapshot}); err != nil {
		t.Fatal(err)
	}
	r.publish(t, create("7")) // live: still a duplicate (a retry)
	c8 := r.publish(t, create("8"))
	d7 := r.publish(t, del("7"))
	again := r.publish(t, create("7")) // after its delete: a new item
	r.drain(t)
	want := []string{"ack+init", `init:[{"id":7}]`, `create:8:[{"id":8}]:` + c8[0].ID, `delete:7:["7"]:` + d7[0].ID, `create:7:[{"id":7}]:` + again[0].ID}
	if got := sink.got(); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
}

// blockSink blocks its first Send of an update until release, and records
// frames.
type blockSink struct {
	*recSink
	entered, release chan struct{}
	once             sync.Once
}

func (s *blockSink) Send(f []byte) {
	first := false
	if strings.HasPrefix(string(f), "update") {
		s.once.Do(func() { first = true })
	}
	if first {
		close(s.entered)
		<-s.release
	}
	s.recSink.Send(f)
}

// No frame follows the end of a subscription: Unsubscribe waits for a
// frame being queued, so the UNSUBSCRIBED the session sends after it is
// the last frame (issue 19.3).
func TestNothingAfterUnsubscribe(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("1", `{"id":1}`)
	sink := &blockSink{recSink: newRecSink(), entered: make(chan struct{}), release: make(chan struct{})}
	s := NewSubscription("c", Credentials{Token: "a"}, nil, 0, nil, sink, textEncoder{})
	if err := r.b.Subscribe(context.Background(), s, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	r.publish(t, update("1"))
	<-sink.entered // the event's frame is being queued
	done := make(chan struct{})
	go func() {
		r.b.Unsubscribe(s)
		sink.recSink.Send([]byte("UNSUBSCRIBED"))
		close(done)
	}()
	select {
	case <-done: // Unsubscribe did not wait: the frame will follow the ack
	case <-time.After(100 * time.Millisecond): // a bound, not a synchronization: passing needs no timing
	}
	close(sink.release)
	<-done
	got := sink.waitN(t, 3) // the ack, the event, UNSUBSCRIBED
	if got[len(got)-1] != "UNSUBSCRIBED" {
		t.Fatalf("a frame followed UNSUBSCRIBED: %v", got)
	}
}
