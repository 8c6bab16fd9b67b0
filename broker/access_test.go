package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// switchClasses groups by a table token → class that an access change
// (any event of collection "sys") replaces with the next table.
type switchClasses struct {
	mu      sync.Mutex
	classes map[string]string
	next    map[string]string
	refuse  []string
	gate    chan struct{} // AccessChanged waits on it when set
	seen    [][]Event
}

func (c *switchClasses) Class(cred Credentials, _ string, _ Query) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.classes[cred.Token]; ok {
		return k
	}
	return "token:" + cred.Token
}

func (c *switchClasses) IsAccessEvent(e Event) bool { return e.Collection == "sys" }

func (c *switchClasses) AccessChanged(_ context.Context, events []Event, live []Credentials) ([]string, error) {
	if c.gate != nil {
		<-c.gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, events)
	c.classes = c.next
	return c.refuse, nil
}

func (c *switchClasses) Refresh(context.Context, []Credentials) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.classes = c.next
	return nil
}

// Subscribers of one class share one read, whatever their tokens; an
// access change regroups them before any later event is dispatched, and
// the events published before it but read after it arrived are read apart
// (their reads answer under the new rules: see doubt.go).
func TestAccessChangeRegroupsBeforeLaterEvents(t *testing.T) {
	cls := &switchClasses{
		classes: map[string]string{"a": "role1", "b": "role1", "c": "role1"},
		next:    map[string]string{"a": "role1", "b": "role1", "c": "role2"},
	}
	r := newRig(t, Options{Classifier: cls, Access: cls})
	r.reader.set("1", `{"id":1}`)
	sinks := map[string]*recSink{}
	for _, tok := range []string{"a", "b", "c"} {
		_, sinks[tok] = r.sub(t, tok, AttachOptions{})
	}
	r.publish(t, update("1"))
	r.drain(t)
	if n := r.reader.reads.Load(); n != 1 {
		t.Fatalf("%d reads for three subscribers of one class", n)
	}
	// Hold the reread: the event before the change must still go out, the
	// one after it must wait for the regroup.
	cls.gate = make(chan struct{})
	gateOnce := sync.OnceFunc(func() { close(cls.gate) })
	t.Cleanup(gateOnce) // also when the test fails: Close waits for the reread
	r.reader.started = make(chan string, 10)
	before := r.publish(t, update("1"))
	if err := r.b.Publish(context.Background(), []Event{{Action: ActionUpdate, Collection: "sys", Keys: []string{"u"}}}); err != nil {
		t.Fatal(err)
	}
	after := r.publish(t, update("1"))
	<-r.reader.started // the event before the change is being read...
	for _, tok := range []string{"a", "b", "c"} {
		sinks[tok].waitN(t, 3) // ...and delivered
	}
	// Its reads (1 or 3, see below) are done: any other read is the next event's.
	for range r.reader.reads.Load() - 2 {
		<-r.reader.started
	}
	select {
	case tok := <-r.reader.started:
		t.Fatalf("the event after the change was read (with %s) before the reread finished", tok)
	default:
	}
	gateOnce()
	r.drain(t)
	for _, tok := range []string{"a", "b", "c"} {
		got := sinks[tok].got()
		if got[2] != `update:1:[{"id":1}]:`+before[0].ID || got[3] != `update:1:[{"id":1}]:`+after[0].ID {
			t.Fatalf("%s got %v", tok, got)
		}
	}
	// 1 (first) + 1 or 3 (before: started with the old class before the
	// change arrived, or read apart, one per token) + 2 (after: role1 and
	// role2).
	if n := r.reader.reads.Load(); n != 4 && n != 6 {
		t.Fatalf("%d reads, want 4 or 6", n)
	}
	if m := r.b.Metrics(); m.Groups != 2 || m.AccessChanges != 1 || m.Regrouped != 1 {
		t.Fatalf("metrics %+v", m)
	}
	if len(cls.seen) != 1 || cls.seen[0][0].Collection != "sys" {
		t.Fatalf("access events seen %v", cls.seen)
	}
}

// A token Directus refuses after an access change (its user was suspended)
// suspends its subscriptions: they get notices, never data read with the
// other members' tokens.
func TestAccessChangeSuspendsRefusedTokens(t *testing.T) {
	cls := &switchClasses{
		classes: map[string]string{"a": "r", "b": "r"},
		next:    map[string]string{"a": "r", "b": "r"},
		refuse:  []string{"b"},
	}
	r := newRig(t, Options{Classifier: cls, Access: cls})
	r.reader.set("1", `{"id":1}`)
	_, a := r.sub(t, "a", AttachOptions{})
	_, b := r.sub(t, "b", AttachOptions{})
	if err := r.b.Publish(context.Background(), []Event{{Action: ActionUpdate, Collection: "sys", Keys: []string{"u"}}}); err != nil {
		t.Fatal(err)
	}
	ev := r.publish(t, update("1"))
	r.drain(t)
	if got := a.got(); got[len(got)-1] != `update:1:[{"id":1}]:`+ev[0].ID {
		t.Fatalf("a: %v", got)
	}
	got := b.got()
	if got[len(got)-1] != "notice:EVENTS_MISSED:"+ev[0].ID+":0" || strings.Join(b.expired, ",") != "b" {
		t.Fatalf("b: %v expired %v", got, b.expired)
	}
	calls := r.reader.callLog()
	if len(calls) != 1 || !strings.HasPrefix(calls[0], "a:") {
		t.Fatalf("reads %v: the refused token must not be read with", calls)
	}
}

// The refresh (Options.AccessRefresh's work) regroups without an event.
func TestRefreshRegroups(t *testing.T) {
	cls := &switchClasses{
		classes: map[string]string{"a": "x", "b": "y"},
		next:    map[string]string{"a": "z", "b": "z"},
	}
	r := newRig(t, Options{Classifier: cls, Access: cls})
	r.reader.set("1", `{"id":1}`)
	r.sub(t, "a", AttachOptions{})
	r.sub(t, "b", AttachOptions{})
	if m := r.b.Metrics(); m.Groups != 2 {
		t.Fatalf("groups %d", m.Groups)
	}
	r.b.access.refresh()
	r.publish(t, Event{Action: ActionUpdate, Keys: []string{"1"}, Payload: json.RawMessage(`{}`)})
	r.drain(t)
	if m := r.b.Metrics(); m.Groups != 1 || m.Reads != 1 {
		t.Fatalf("after the refresh: %+v", m)
	}
}

// Events queued before an access change but read after it arrived are read
// apart, each member with its own token: read once and shared under the
// old class, one member's view under the new rules would reach the others
// (issue 18.8: a backlogged create of A's draft reached B after a rule
// gained "OR owner = $CURRENT_USER").
func TestEventsBeforeAccessChangeAreNotSharedUnderOldClasses(t *testing.T) {
	cls := &switchClasses{
		classes: map[string]string{"a": "role1", "b": "role1"},
		next:    map[string]string{"a": "role1", "b": "role1"},
		gate:    make(chan struct{}),
	}
	r := newRig(t, Options{Classifier: cls, Access: cls})
	gateOnce := sync.OnceFunc(func() { close(cls.gate) })
	t.Cleanup(gateOnce) // before the rig's Close, which waits for the reread
	r.reader.set("0", `{"id":0}`)
	// Under the new rules a and b see item 1 differently.
	r.reader.per = map[string]map[string]string{"a": {"1": `{"id":1,"v":"a's view"}`}, "b": {"1": `{"id":1,"v":"b's view"}`}}
	hold := make(chan struct{})
	r.reader.hold = map[string]chan struct{}{"a": hold, "b": hold}
	r.reader.started = make(chan string, 16)
	sinks := map[string]*recSink{}
	for _, tok := range []string{"a", "b"} {
		_, sinks[tok] = r.sub(t, tok, AttachOptions{})
	}
	r.publish(t, update("0"))
	<-r.reader.started // the group reads event 0, held
	queued := r.publish(t, update("1"))
	if err := r.b.Publish(context.Background(), []Event{{Action: ActionUpdate, Collection: "sys", Keys: []string{"u"}}}); err != nil {
		t.Fatal(err)
	}
	close(hold)
	for _, tok := range []string{"a", "b"} {
		got := sinks[tok].waitN(t, 3)
		if want := `update:1:[{"id":1,"v":"` + tok + `'s view"}]:` + queued[0].ID; got[2] != want {
			t.Fatalf("%s received %q, want its own read %q", tok, got[2], want)
		}
	}
	gateOnce()
	r.drain(t)
	if m := r.b.Metrics(); m.ApartReads != 2 {
		t.Fatalf("%d parts read apart, want 2", m.ApartReads)
	}
}

// scopedWatcher: access events of collection "users" concern the tokens
// named in their keys; AccessChanged blocks until its context ends.
type scopedWatcher struct {
	mu      sync.Mutex
	forgot  []string
	reread  chan struct{}
	blocked chan struct{}
}

func (w *scopedWatcher) Class(c Credentials, _ string, _ Query) string { return "all" }
func (w *scopedWatcher) IsAccessEvent(e Event) bool                    { return e.Collection == "users" }
func (w *scopedWatcher) Concerns(e Event, c Credentials) bool {
	for _, k := range e.Keys {
		if k == c.Token {
			return true
		}
	}
	return false
}
func (w *scopedWatcher) Forget(e Event) {
	w.mu.Lock()
	w.forgot = append(w.forgot, e.Keys...)
	w.mu.Unlock()
}
func (w *scopedWatcher) AccessChanged(ctx context.Context, _ []Event, _ []Credentials) ([]string, error) {
	close(w.reread)
	select {
	case <-w.blocked:
	case <-ctx.Done():
	}
	return nil, nil
}
func (w *scopedWatcher) Refresh(context.Context, []Credentials) error { return nil }

// A change of a user no subscription holds (a sign-up) holds no shard: the
// events behind it are delivered without waiting for a reread, and the
// watcher forgets the user instead (issue 19.2). A change of a subscribed
// user still holds them.
func TestUnconcerningAccessEventHoldsNothing(t *testing.T) {
	w := &scopedWatcher{reread: make(chan struct{}), blocked: make(chan struct{})}
	r := newRig(t, Options{Classifier: w, Access: w})
	t.Cleanup(func() { close(w.blocked) })
	r.reader.set("1", `{"id":1}`)
	_, sink := r.sub(t, "a", AttachOptions{})
	if err := r.b.Publish(context.Background(), []Event{{Action: ActionCreate, Collection: "users", Keys: []string{"new-user"}}}); err != nil {
		t.Fatal(err)
	}
	ev := r.publish(t, update("1"))
	r.drain(t) // would wait for the blocked reread behind a barrier
	if got := sink.got(); got[len(got)-1] != `update:1:[{"id":1}]:`+ev[0].ID {
		t.Fatalf("got %v", got)
	}
	w.mu.Lock()
	forgot := strings.Join(w.forgot, ",")
	w.mu.Unlock()
	if forgot != "new-user" {
		t.Fatalf("forgot %q", forgot)
	}
	if err := r.b.Publish(context.Background(), []Event{{Action: ActionUpdate, Collection: "users", Keys: []string{"a"}}}); err != nil {
		t.Fatal(err)
	}
	<-w.reread // a change of a subscribed user rereads
}

// genWatcher: events of collection "users" concern the tokens in their
// keys; a token's class is "<generation>:<token>" and AccessChanged, once
// released, advances the generation.
type genWatcher struct {
	gen     atomic.Int64
	reread  chan struct{} // closed when a reread starts
	release chan struct{}
}

func (w *genWatcher) Class(c Credentials, _ string, _ Query) string {
	return fmt.Sprintf("%d:%s", w.gen.Load(), c.Token)
}
func (w *genWatcher) IsAccessEvent(e Event) bool { return e.Collection == "users" }
func (w *genWatcher) Concerns(e Event, c Credentials) bool {
	return slices.Contains(e.Keys, c.Token)
}
func (w *genWatcher) AccessChanged(ctx context.Context, _ []Event, _ []Credentials) ([]string, error) {
	close(w.reread)
	select {
	case <-w.release:
	case <-ctx.Done():
	}
	w.gen.Add(1)
	return nil, nil
}
func (w *genWatcher) Refresh(context.Context, []Credentials) error { return nil }

// A batch refused because a queue is full (the webhook answers 503) leaves
// no access change pending: it was never queued, and a change left pending
// would make its groups read apart for ever (and, counted by position,
// would apply a later change's regroup in its place).
func TestRefusedBatchLeavesNoChangePending(t *testing.T) {
	w := &genWatcher{reread: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, Options{Shards: 1, QueueSize: 2, Classifier: w, Access: w})
	released := sync.OnceFunc(func() { close(w.release) })
	t.Cleanup(released)
	r.reader.set("1", `{"id":1}`)
	r.sub(t, "u", AttachOptions{})
	change := Event{Action: ActionUpdate, Collection: "users", Keys: []string{"u"}, Payload: json.RawMessage(`{}`)}
	if err := r.b.Publish(context.Background(), []Event{change}); err != nil {
		t.Fatal(err)
	}
	<-w.reread // the shard parks at the change: its queue fills
	r.publish(t, update("1"), update("1"))
	err := r.b.Publish(context.Background(), []Event{change, {Collection: "c", Action: ActionUpdate, Keys: []string{"1"}, Payload: json.RawMessage(`{}`)}})
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("publish into a full queue: %v, want ErrQueueFull", err)
	}
	released()
	r.drain(t)
	if pending := r.b.doubts.events(); len(pending) != 0 {
		t.Fatalf("%d access changes still pending after everything queued was applied", len(pending))
	}
}

// A shutdown ends a reread in progress (EndAccessChanges), so Drain
// delivers the events behind its access change instead of reporting them
// missed once the reread's own timeout or Stop ends it (chaos, access
// scenario: 24 events were reported to 2,000 subscribers with 11 s left).
func TestEndAccessChangesReleasesTheDrain(t *testing.T) {
	w := &scopedWatcher{reread: make(chan struct{}), blocked: make(chan struct{})}
	r := newRig(t, Options{Classifier: w, Access: w})
	t.Cleanup(func() { close(w.blocked) })
	r.reader.set("1", `{"id":1}`)
	_, sink := r.sub(t, "a", AttachOptions{})
	if err := r.b.Publish(context.Background(), []Event{{Action: ActionUpdate, Collection: "users", Keys: []string{"a"}}}); err != nil {
		t.Fatal(err)
	}
	<-w.reread
	ev := r.publish(t, update("1"))
	r.b.EndAccessChanges()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.b.Drain(ctx); err != nil {
		t.Fatalf("drain: %v (the reread still holds the shards)", err)
	}
	if got := sink.got(); got[len(got)-1] != `update:1:[{"id":1}]:`+ev[0].ID {
		t.Fatalf("got %v", got)
	}
}

// deliveringClasses is switchClasses whose access events are the updates
// of the collection subscribed to ("c"), delivered as well (Deliverer): a
// related item a rule reads through the user ($CURRENT_USER.org.tier).
type deliveringClasses struct{ switchClasses }

func (c *deliveringClasses) IsAccessEvent(e Event) bool {
	return e.Collection == "c" && e.Action == ActionUpdate
}
func (c *deliveringClasses) Delivers(Event) bool { return true }

// An access event that is also an item event is applied first, then
// delivered to its collection's subscribers, read with the classes after
// the change: a and b keep one class, c moves to its own, so 2 reads (1
// under the old classes, 3 apart).
func TestDeliveredAccessEventIsReadAfterTheRegroup(t *testing.T) {
	cls := &deliveringClasses{switchClasses{
		classes: map[string]string{"a": "role1", "b": "role1", "c": "role1"},
		next:    map[string]string{"a": "role1", "b": "role1", "c": "role2"},
	}}
	for _, try := range []string{"Dispatch", "TryDispatch"} {
		t.Run(try, func(t *testing.T) {
			cls.classes = map[string]string{"a": "role1", "b": "role1", "c": "role1"}
			cls.seen = nil
			r := newRig(t, Options{Classifier: cls, Access: cls})
			r.reader.set("1", `{"id":1}`)
			sinks := map[string]*recSink{}
			for _, tok := range []string{"a", "b", "c"} {
				_, sinks[tok] = r.sub(t, tok, AttachOptions{})
			}
			e := update("1")
			e.Collection, e.Payload = "c", json.RawMessage(`{"title":"x"}`)
			if try == "Dispatch" {
				dispatcher{r.b}.Dispatch(e)
			} else if err := (dispatcher{r.b}).TryDispatch([]Event{e}); err != nil {
				t.Fatal(err)
			}
			r.drain(t)
			for tok, s := range sinks {
				if got := s.got(); len(got) != 2 || !strings.HasPrefix(got[1], `update:1:[{"id":1}]`) {
					t.Fatalf("%s got %v", tok, got)
				}
			}
			if n := r.reader.reads.Load(); n != 2 {
				t.Fatalf("%d reads, want 2 (after the regroup)", n)
			}
			if len(cls.seen) != 1 {
				t.Fatalf("access changes %v", cls.seen)
			}
		})
	}
}
