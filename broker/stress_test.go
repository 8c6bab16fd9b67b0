package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// The interleaving stress test (issue 19): clients subscribe (some resuming
// with since), unsubscribe, replace a subscription by a new one, rebind to
// another token, while events of two collections and access changes that
// regroup everyone are published. Each subscription must receive its ack
// first, nothing after Unsubscribe returned, no event twice, events in
// order; a subscription that stays to the end receives every event
// published after it was set up. Run by make test (with -race); the seed
// is logged so that a failure can be replayed with STRESS_SEED.

// flipClasses puts token i in class (i + generation) % 2; each access
// change (collection "sys") advances the generation, so every change moves
// half the subscriptions to the other class.
type flipClasses struct{ gen atomic.Int64 }

func (c *flipClasses) Class(cred Credentials, _ string, _ Query) string {
	var i int64
	fmt.Sscanf(cred.Token, "t%d", &i)
	return fmt.Sprintf("k%d", (i+c.gen.Load())%2)
}

func (c *flipClasses) IsAccessEvent(e Event) bool { return e.Collection == "sys" }

func (c *flipClasses) AccessChanged(context.Context, []Event, []Credentials) ([]string, error) {
	c.gen.Add(1)
	return nil, nil
}

func (c *flipClasses) Refresh(context.Context, []Credentials) error { return nil }

// stressClasses is a Classifier and its AccessWatcher.
type stressClasses interface {
	Classifier
	AccessWatcher
}

// scopedFlip flips the class of the tokens an access event names (its
// keys) only, and says so (DoubtScope): a change holds only the shards of
// their subscriptions, and those attaching elsewhere meanwhile are
// classified again.
type scopedFlip struct {
	mu  sync.Mutex
	gen map[string]int
}

func (c *scopedFlip) Class(cred Credentials, _ string, _ Query) string {
	var i int
	fmt.Sscanf(cred.Token, "t%d", &i)
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("k%d", (i+c.gen[cred.Token])%2)
}

func (c *scopedFlip) IsAccessEvent(e Event) bool { return e.Collection == "sys" }

func (c *scopedFlip) Concerns(e Event, cred Credentials) bool {
	return slices.Contains(e.Keys, cred.Token)
}

func (c *scopedFlip) AccessChanged(_ context.Context, events []Event, _ []Credentials) ([]string, error) {
	// A reread takes a while, as Directus's does: attaches happen meanwhile.
	time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == nil {
		c.gen = map[string]int{}
	}
	for _, e := range events {
		for _, k := range e.Keys {
			c.gen[k]++
		}
	}
	return nil, nil
}

func (c *scopedFlip) Refresh(context.Context, []Credentials) error { return nil }

// jitterReader is a read that takes up to 200 µs.
type jitterReader struct{ *fakeReader }

func (j jitterReader) ReadItems(ctx context.Context, token, coll string, keys []string, q Query) (map[string]json.RawMessage, error) {
	time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
	return j.fakeReader.ReadItems(ctx, token, coll, keys, q)
}

// streamSink records frames without ever blocking.
type streamSink struct {
	mu     sync.Mutex
	frames []string
}

func (s *streamSink) Send(f []byte) {
	if len(f) == 0 {
		return
	}
	s.mu.Lock()
	s.frames = append(s.frames, string(f))
	s.mu.Unlock()
}

func (s *streamSink) TokenExpired(string) {}

func (s *streamSink) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.frames...)
}

// stressSub is one subscription's life as a client saw it.
type stressSub struct {
	coll string
	sink *streamSink
	// ended is how many frames it had when Unsubscribe returned (-1: it
	// stayed to the end); fromSeq is the publisher's sequence when its
	// Subscribe returned.
	ended   int
	fromSeq int64
	sub     *Subscription
}

// published is what the publisher published, each batch with the sequence
// number it was given before its Publish began.
type published struct {
	mu      sync.Mutex
	seq     atomic.Int64
	batches []pubBatch
}

type pubBatch struct {
	seq    int64
	events []Event
}

func TestStressInterleavings(t *testing.T) {
	t.Run("changes hold every shard", func(t *testing.T) { stressInterleavings(t, &flipClasses{}) })
	t.Run("changes hold their shards", func(t *testing.T) { stressInterleavings(t, &scopedFlip{}) })
}

func stressInterleavings(t *testing.T, cls stressClasses) {
	seed := stressSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	// Reads take a while, as Directus's do: pipelines are busy when
	// attaches, rebinds, detaches and regroups happen.
	r := &rig{bus: &testBus{MemoryBus: NewMemoryBus(100, time.Hour)}, reader: newFakeReader()}
	r.b = New(r.bus, jitterReader{r.reader}, Options{Shards: 2, Classifier: cls, Access: cls}, zerolog.Nop())
	if err := r.b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.b.Close() })
	for k := range 8 {
		r.reader.set(fmt.Sprint(k), fmt.Sprintf(`{"id":%d}`, k))
	}
	const (
		clients    = 8
		steps      = 600
		events     = 15000
		accessEach = 25
	)
	colls := []string{"c", "d"}
	var pub published
	var wg, cwg sync.WaitGroup
	var clientsDone atomic.Bool
	ctx := context.Background()

	// The publisher.
	pubSeed := rng.Uint64()
	wg.Add(1)
	go func() {
		defer wg.Done()
		prng := rand.New(rand.NewPCG(pubSeed, 1))
		for i := 0; i < events && !clientsDone.Load(); {
			var batch []Event
			for range 1 + prng.IntN(4) {
				i++
				if i%accessEach == 0 {
					batch = append(batch, Event{Collection: "sys", Action: ActionUpdate, Keys: []string{fmt.Sprintf("t%d", prng.IntN(4))}, Payload: json.RawMessage(`{}`)})
					continue
				}
				e := Event{Collection: colls[prng.IntN(2)], Keys: []string{fmt.Sprint(prng.IntN(8))}}
				switch prng.IntN(3) {
				case 0:
					e.Action = ActionCreate
				case 1:
					e.Action = ActionUpdate
				default:
					e.Action = ActionDelete
				}
				if e.Action != ActionDelete {
					e.Payload = json.RawMessage(`{"title":"x"}`)
				}
				batch = append(batch, e)
			}
			seq := pub.seq.Add(1)
			err := r.b.Publish(ctx, batch)
			for errors.Is(err, ErrQueueFull) { // the webhook's 503: wait, send again
				if err = r.b.Drain(ctx); err == nil {
					seq = pub.seq.Add(1)
					err = r.b.Publish(ctx, batch)
				}
			}
			if err != nil {
				t.Error(err)
				return
			}
			pub.mu.Lock()
			pub.batches = append(pub.batches, pubBatch{seq: seq, events: batch})
			pub.mu.Unlock()
		}
	}()

	// The clients.
	var mu sync.Mutex
	var lives []*stressSub
	for c := range clients {
		cseed := rng.Uint64()
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			crng := rand.New(rand.NewPCG(cseed, 2))
			var cur *Subscription
			var life *stressSub
			lastSeen := ""
			subscribe := func() {
				coll := colls[crng.IntN(2)]
				sink := &streamSink{}
				tok := fmt.Sprintf("t%d", crng.IntN(4))
				s := NewSubscription(coll, Credentials{Token: tok}, nil, 0, json.RawMessage(fmt.Sprint(c)), sink, textEncoder{})
				opts := AttachOptions{}
				if lastSeen != "" && crng.IntN(2) == 0 {
					opts.Since = lastSeen
				}
				if err := r.b.Subscribe(ctx, s, opts); err != nil {
					t.Error(err)
					return
				}
				cur, life = s, &stressSub{coll: coll, sink: sink, ended: -1, fromSeq: pub.seq.Load(), sub: s}
				mu.Lock()
				lives = append(lives, life)
				mu.Unlock()
			}
			end := func() {
				r.b.Unsubscribe(cur)
				life.ended = len(life.sink.got())
				if id := lastEventID(life.sink.got()); id != "" {
					lastSeen = id
				}
				cur = nil
			}
			for range steps {
				switch op := crng.IntN(10); {
				case cur == nil:
					subscribe()
				case op < 3:
					r.b.Rebind(cur, Credentials{Token: fmt.Sprintf("t%d", crng.IntN(4))})
				case op < 5:
					end() // and a new one next step: a replaced uid
				case op < 6:
					end()
					subscribe()
				default:
					if err := r.b.Drain(ctx); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	cwg.Wait()
	clientsDone.Store(true)
	wg.Wait()
	r.drain(t)

	all := map[string][]string{} // collection → ids in publish order
	var order []pubBatch
	pub.mu.Lock()
	order = append(order, pub.batches...)
	pub.mu.Unlock()
	for _, b := range order {
		for _, e := range b.events {
			all[e.Collection] = append(all[e.Collection], e.ID)
		}
	}
	if len(lives) < clients*5 {
		t.Fatalf("only %d subscriptions made: the test exercised too little", len(lives))
	}
	stayed := 0
	for i, l := range lives {
		got := l.sink.got()
		where := fmt.Sprintf("subscription %d (%s, seed %d)", i, l.coll, seed)
		if len(got) == 0 || !strings.HasPrefix(got[0], "ack") {
			t.Fatalf("%s: first frame is not its ack: %q", where, got[:min(len(got), 3)])
		}
		if l.ended >= 0 && len(got) != l.ended {
			t.Fatalf("%s: %d frames after Unsubscribe returned: %q", where, len(got)-l.ended, got[l.ended:])
		}
		seen := map[string]bool{}
		last := ""
		for _, f := range got[1:] {
			id := frameEventID(f)
			if id == "" {
				continue
			}
			if seen[id] {
				t.Fatalf("%s: event %s twice; its last frames: %q", where, id, lastFrames(got))
			}
			seen[id] = true
			if last != "" && CompareIDs(id, last) <= 0 {
				t.Fatalf("%s: event %s after %s; its last frames: %q", where, id, last, lastFrames(got))
			}
			last = id
		}
		if l.ended >= 0 {
			continue
		}
		stayed++
		for _, b := range order {
			if b.seq <= l.fromSeq {
				continue
			}
			for _, e := range b.events {
				if e.Collection == l.coll && !seen[e.ID] {
					t.Fatalf("%s: event %s (%s of %v), published after it was set up, never arrived", where, e.ID, e.Action, e.Keys)
				}
			}
		}
	}
	// Every subscription left is in the group of its class now: none kept
	// a class from before a change (those attached elsewhere during one
	// are classified again once it is applied).
	until(t, "every access change is settled", func() bool { return len(r.b.doubts.events()) == 0 })
	for i, l := range lives {
		if l.ended >= 0 {
			continue
		}
		if g, want := r.b.index.groupOf(l.sub), cls.Class(l.sub.Credentials(), l.coll, nil); g == nil || g.class != want {
			t.Fatalf("subscription %d (%s, %s, seed %d): in group %v, its class now is %s", i, l.coll, l.sub.Token(), seed, g, want)
		}
	}
	t.Logf("seed %d: %d subscriptions (%d stayed to the end), %d events of c, %d of d, %d access changes, %d regrouped",
		seed, len(lives), stayed, len(all["c"]), len(all["d"]), len(all["sys"]), r.b.Metrics().Regrouped)
	if stayed == 0 {
		t.Fatal("no subscription stayed to the end: completeness was not checked")
	}
}

// stressSeed is STRESS_SEED, or a new seed.
func stressSeed(t *testing.T) uint64 {
	if v := os.Getenv("STRESS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("STRESS_SEED=%q: %v", v, err)
		}
		return n
	}
	return rand.Uint64()
}

// frameEventID is the event id of a textEncoder event frame ("" for the
// ack, init and notices).
func frameEventID(f string) string {
	if strings.HasPrefix(f, "notice:") || strings.HasPrefix(f, "ack") || strings.HasPrefix(f, "init:") {
		return ""
	}
	return f[strings.LastIndexByte(f, ':')+1:]
}

func lastEventID(frames []string) string {
	for i := len(frames) - 1; i >= 0; i-- {
		if id := frameEventID(frames[i]); id != "" {
			return id
		}
	}
	return ""
}

func lastFrames(frames []string) []string { return frames[max(0, len(frames)-6):] }
