package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The fakes of the domain's unit tests: a Directus that answers reads from a
// table of what each token may see, a sink that records frames, and an
// encoder whose frames are easy to assert on.

// fakeReader answers reads from items, filtered by visible[token] (nil = all
// items). Reads wait on gate when it is set; refused tokens get
// ErrTokenExpired; fail makes every read fail.
type fakeReader struct {
	mu      sync.Mutex
	items   map[string]string            // key → JSON object
	per     map[string]map[string]string // token → key → JSON object, over items
	visible map[string]map[string]bool   // token → keys it may read
	refused map[string]bool
	// refuseFirst refuses the token of the first read from then on.
	refuseFirst bool
	fail        error
	gate        chan struct{}
	// hold makes the reads of a token wait until its channel is closed.
	hold    map[string]chan struct{}
	started chan string // receives the token of each read as it starts (if set)
	reads   atomic.Int64
	calls   []string // "token:key,key" per read
}

func newFakeReader() *fakeReader {
	return &fakeReader{items: map[string]string{}, visible: map[string]map[string]bool{}, refused: map[string]bool{}}
}

func (r *fakeReader) set(key, item string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.items[key] = item
}

func (r *fakeReader) allow(token string, keys ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.visible[token] == nil {
		r.visible[token] = map[string]bool{}
	}
	for _, k := range keys {
		r.visible[token][k] = true
	}
}

func (r *fakeReader) ReadItems(ctx context.Context, token, _ string, keys []string, _ Query) (map[string]json.RawMessage, error) {
	r.reads.Add(1)
	if r.started != nil {
		r.started <- token
	}
	if r.gate != nil {
		select {
		case <-r.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.mu.Lock()
	hold := r.hold[token]
	r.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, token+":"+strings.Join(keys, ","))
	if r.fail != nil {
		return nil, r.fail
	}
	if r.refuseFirst {
		r.refuseFirst = false
		r.refused[token] = true
	}
	if r.refused[token] {
		return nil, fmt.Errorf("read: %w", ErrTokenExpired)
	}
	out := map[string]json.RawMessage{}
	for _, k := range keys {
		if item, ok := r.per[token][k]; ok {
			out[k] = json.RawMessage(item)
			continue
		}
		item, ok := r.items[k]
		if !ok {
			continue
		}
		if v := r.visible[token]; v != nil && !v[k] {
			continue
		}
		out[k] = json.RawMessage(item)
	}
	return out, nil
}

func (r *fakeReader) ReadSnapshot(context.Context, string, string, Query) (json.RawMessage, error) {
	return json.RawMessage(`[]`), nil
}

func (r *fakeReader) callLog() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// recSink records frames and token refusals.
type recSink struct {
	mu      sync.Mutex
	frames  []string
	expired []string
	notify  chan struct{}
}

func newRecSink() *recSink { return &recSink{notify: make(chan struct{}, 1<<16)} }

func (s *recSink) Send(f []byte) {
	if len(f) == 0 {
		return
	}
	s.mu.Lock()
	s.frames = append(s.frames, string(f))
	s.mu.Unlock()
	s.notify <- struct{}{}
}

func (s *recSink) TokenExpired(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expired = append(s.expired, token)
}

func (s *recSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.frames...)
}

// waitN waits until s has at least n frames.
func (s *recSink) waitN(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := s.got(); len(got) >= n {
			return got
		}
		select {
		case <-s.notify:
		case <-deadline:
			t.Fatalf("want %d frames, have %v", n, s.got())
		}
	}
}

// textEncoder writes frames as short text:
//
//	ack  init:<data>  <action>:<keys>:<data>:<id>  notice:<code>:<event id>:<count>
type textEncoder struct{}

func (textEncoder) Event(d *Delivery, uid json.RawMessage) []byte {
	return fmt.Appendf(nil, "%s:%s:%s:%s", d.Event.Action, strings.Join(d.Keys, ","), d.Data, d.Event.ID)
}
func (textEncoder) Ack(_ *Subscription, snapshot bool) []byte {
	if snapshot {
		return []byte("ack+init")
	}
	return []byte("ack")
}
func (textEncoder) Init(_ *Subscription, data json.RawMessage) []byte {
	return fmt.Appendf(nil, "init:%s", data)
}
func (textEncoder) Notice(_ *Subscription, n Notice) []byte {
	return fmt.Appendf(nil, "notice:%s:%s:%d", n.Code, n.EventID, n.Count)
}

// rig is a started broker on a memory bus with a fake reader.
type rig struct {
	b      *Broker
	bus    *testBus
	reader *fakeReader
}

// testBus is a MemoryBus whose History can be made to fail.
type testBus struct {
	*MemoryBus
	failHistory error
}

func (b *testBus) History(ctx context.Context, collection, since string) ([]Event, bool, error) {
	if b.failHistory != nil {
		return nil, false, b.failHistory
	}
	return b.MemoryBus.History(ctx, collection, since)
}

func newRig(t *testing.T, opts Options) *rig {
	t.Helper()
	r := &rig{bus: &testBus{MemoryBus: NewMemoryBus(100, time.Hour)}, reader: newFakeReader()}
	r.b = New(r.bus, r.reader, opts, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel))
	if err := r.b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.b.Close() })
	return r
}

// sub attaches a subscription of collection c reading as token.
func (r *rig) sub(t *testing.T, token string, opts AttachOptions) (*Subscription, *recSink) {
	t.Helper()
	sink := newRecSink()
	s := NewSubscription("c", Credentials{Token: token}, nil, 0, nil, sink, textEncoder{})
	if err := r.b.Subscribe(context.Background(), s, opts); err != nil {
		t.Fatal(err)
	}
	return s, sink
}

func (r *rig) publish(t *testing.T, events ...Event) []Event {
	t.Helper()
	for i := range events {
		if events[i].Collection == "" {
			events[i].Collection = "c"
		}
		if events[i].Payload == nil && events[i].Action != ActionDelete {
			events[i].Payload = json.RawMessage(`{"title":"x"}`)
		}
	}
	if err := r.b.Publish(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	return events
}

func (r *rig) drain(t *testing.T) {
	t.Helper()
	if err := r.b.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func update(keys ...string) Event { return Event{Action: ActionUpdate, Keys: keys} }
func create(key string) Event     { return Event{Action: ActionCreate, Keys: []string{key}} }
func del(keys ...string) Event    { return Event{Action: ActionDelete, Keys: keys} }

// staticReader answers every read with the same item: the benchmarks
// measure the broker's own cost, not Directus's.
type staticReader struct{ reads atomic.Int64 }

func (r *staticReader) ReadItems(_ context.Context, _, _ string, keys []string, _ Query) (map[string]json.RawMessage, error) {
	r.reads.Add(1)
	out := make(map[string]json.RawMessage, len(keys))
	for _, k := range keys {
		out[k] = json.RawMessage(`{"id":` + k + `,"title":"hello","status":"published"}`)
	}
	return out, nil
}

func (r *staticReader) ReadSnapshot(context.Context, string, string, Query) (json.RawMessage, error) {
	return json.RawMessage(`[]`), nil
}

type countingSink struct{ n atomic.Int64 }

func (s *countingSink) Send([]byte)         { s.n.Add(1) }
func (s *countingSink) TokenExpired(string) {}

type nopEncoder struct{}

func (nopEncoder) Event(d *Delivery, uid json.RawMessage) []byte {
	return append(append([]byte(nil), d.Data...), uid...)
}
func (nopEncoder) Ack(*Subscription, bool) []byte             { return nil }
func (nopEncoder) Init(*Subscription, json.RawMessage) []byte { return nil }
func (nopEncoder) Notice(*Subscription, Notice) []byte        { return nil }

func (s *recSink) expiredCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.expired)
}
