package broker

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// One read per group and event, each subscriber getting what its own token
// reads: a token that may not read the item gets nothing.
func TestDispatchReadsOncePerGroup(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("1", `{"id":1}`)
	r.reader.allow("a", "1")
	r.reader.allow("b") // reads nothing
	_, a1 := r.sub(t, "a", AttachOptions{})
	_, a2 := r.sub(t, "a", AttachOptions{})
	_, b1 := r.sub(t, "b", AttachOptions{})
	ev := r.publish(t, update("1"))
	r.drain(t)
	want := []string{"ack", `update:1:[{"id":1}]:` + ev[0].ID}
	for _, s := range []*recSink{a1, a2} {
		if got := s.got(); !reflect.DeepEqual(got, want) {
			t.Fatalf("token a: %v, want %v", got, want)
		}
	}
	if got := b1.got(); !reflect.DeepEqual(got, []string{"ack"}) {
		t.Fatalf("token b must see nothing: %v", got)
	}
	if n := r.reader.reads.Load(); n != 2 {
		t.Fatalf("%d reads for 2 groups", n)
	}
}

// Events queued while a read is in flight are dispatched together: the
// group reads all their keys at once.
func TestDispatchBatchesQueuedEvents(t *testing.T) {
	r := newRig(t, Options{})
	for _, k := range []string{"1", "2", "3"} {
		r.reader.set(k, `{"id":`+k+`}`)
	}
	_, sink := r.sub(t, "a", AttachOptions{})
	r.reader.gate = make(chan struct{})
	r.reader.started = make(chan string, 10)
	r.publish(t, update("1"))
	<-r.reader.started // the first read is in flight
	r.publish(t, update("2"))
	r.publish(t, update("3"), update("1"))
	// Publish returns once the bus took the events; the shard's worker
	// hands them to the group a moment later. Opening the gate before all
	// three wait in the pipeline lets the first read's end take "2" alone.
	g := r.b.index.groups("c")[0]
	until(t, "the three events wait in the group's pipeline", func() bool { return pending(g) == 3 })
	close(r.reader.gate)
	sink.waitN(t, 5)
	calls := r.reader.callLog()
	if !reflect.DeepEqual(calls, []string{"a:1", "a:2,3,1"}) {
		t.Fatalf("reads %v: the three queued events must share one read", calls)
	}
	got := sink.got()
	for i, k := range []string{"1", "2", "3", "1"} {
		if !strings.HasPrefix(got[i+1], "update:"+k+":") {
			t.Fatalf("frame %d is %q, want the update of %s (order kept): %v", i+1, got[i+1], k, got)
		}
	}
}

// The update payload keeps only the changed fields the group's read
// returned, with the values it returned.
func TestDispatchRestrictsPayload(t *testing.T) {
	e := Event{Action: ActionUpdate, Keys: []string{"1"}, Payload: json.RawMessage(`{"title":"t","secret":"s"}`)}
	d, ok := view(e, map[string]json.RawMessage{"1": json.RawMessage(`{"id":1,"title":"T"}`)}, nil, func(string) bool { return false })
	if !ok || string(d.Payload) != `{"title":"T"}` || string(d.Data) != `[{"id":1,"title":"T"}]` {
		t.Fatalf("view: %+v %v", d, ok)
	}
	if _, ok := view(e, map[string]json.RawMessage{}, nil, func(string) bool { return false }); ok {
		t.Fatal("an update the group cannot read must not be delivered")
	}
}

// The delete rule: a delete reaches a group unless the group's latest read
// of that key returned nothing; keys never read are sent.
func TestDeleteRule(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("1", `{"id":1}`)
	r.reader.set("2", `{"id":2}`)
	r.reader.allow("a", "1")
	_, sink := r.sub(t, "a", AttachOptions{})
	r.publish(t, update("1"), update("2")) // a reads 1, not 2
	r.drain(t)
	ev := r.publish(t, del("1", "2", "3")) // 3 was never read
	r.drain(t)
	got := sink.got()
	if last := got[len(got)-1]; last != `delete:1,3:["1","3"]:`+ev[0].ID {
		t.Fatalf("delete frame %q: 2 (hidden at the latest read) must be withheld, 1 and 3 sent", last)
	}
	// The item becomes visible: the next read records it, and its delete
	// is sent.
	r.reader.allow("a", "2")
	r.publish(t, update("2"))
	r.drain(t)
	ev = r.publish(t, del("2"))
	r.drain(t)
	got = sink.got()
	if last := got[len(got)-1]; last != `delete:2:["2"]:`+ev[0].ID {
		t.Fatalf("delete of a key the latest read showed: %q", last)
	}
}

// A key deleted later in the same batch reads as missing; that must not
// count as hidden, or its own delete would be withheld.
func TestDeleteInSameBatchAsUpdate(t *testing.T) {
	r := newRig(t, Options{})
	_, sink := r.sub(t, "a", AttachOptions{})
	r.reader.gate = make(chan struct{})
	r.reader.started = make(chan string, 10)
	r.reader.set("9", `{"id":9}`)
	r.publish(t, update("9"))
	<-r.reader.started
	// Queued behind the read: an update of 5 (already deleted in Directus,
	// so it reads as missing) and its delete.
	ev := r.publish(t, update("5"), del("5"))
	close(r.reader.gate)
	got := sink.waitN(t, 3)
	if got[2] != `delete:5:["5"]:`+ev[1].ID {
		t.Fatalf("delete after an update in one batch: %v", got)
	}
}

// A failed read is never replaced by unfiltered data: the group is told it
// missed the event; deletes (no read) still go out.
func TestReadFailureSendsNotice(t *testing.T) {
	r := newRig(t, Options{})
	_, sink := r.sub(t, "a", AttachOptions{})
	r.reader.fail = errors.New("directus down")
	ev := r.publish(t, update("1"), del("2"))
	r.drain(t)
	got := sink.got()
	want := []string{"ack", "notice:EVENTS_MISSED:" + ev[0].ID + ":0", `delete:2:["2"]:` + ev[1].ID}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if m := r.b.Metrics(); m.EventsMissed != 1 || m.ReadErrors != 1 {
		t.Fatalf("metrics %+v", m)
	}
}

// Within one class a refused token is reported to its holder, whose
// subscription is suspended (told of what it misses), and the read is
// retried with another member's token: the others lose nothing.
func TestRefusedTokenRetriesWithAnotherMember(t *testing.T) {
	r := newRig(t, Options{Classifier: oneClass{}})
	r.reader.set("1", `{"id":1}`)
	_, aSink := r.sub(t, "a", AttachOptions{})
	_, bSink := r.sub(t, "b", AttachOptions{})
	r.reader.refuseFirst = true // whichever token the broker tries first
	ev := r.publish(t, update("1"))
	r.drain(t)
	refused, other := aSink, bSink
	if len(bSink.expired) > 0 {
		refused, other = bSink, aSink
	}
	if len(refused.expired) != 1 || len(other.expired) != 0 {
		t.Fatalf("expired: a %v b %v", aSink.expired, bSink.expired)
	}
	if got := other.got(); got[len(got)-1] != `update:1:[{"id":1}]:`+ev[0].ID {
		t.Fatalf("the other member must get the event read with its own token: %v", got)
	}
	got := refused.got()
	if got[len(got)-1] != "notice:EVENTS_MISSED:"+ev[0].ID+":0" {
		t.Fatalf("the refused member must get a notice, not data: %v", got)
	}
	// A suspended member is never read with and gets no data, deletes
	// included; its run of missed events was told once.
	r.publish(t, update("1"), del("1"))
	r.drain(t)
	if again := refused.got(); len(again) != len(got) {
		t.Fatalf("suspended member got more: %v", again)
	}
	calls := r.reader.callLog()
	if len(calls) != 3 || calls[2] != calls[1] {
		t.Fatalf("reads %v: after the refusal every read must use the working token", calls)
	}
}

// oneClass puts every token in one class.
type oneClass struct{}

func (oneClass) Class(Credentials, string, Query) string { return "all" }

// Rebind moves a subscription to its new token's group and lifts a
// suspension.
func TestRebind(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("1", `{"id":1}`)
	r.reader.allow("a")
	r.reader.allow("b", "1")
	s, sink := r.sub(t, "a", AttachOptions{})
	r.b.Suspend(s)
	r.b.Rebind(s, Credentials{Token: "b"})
	ev := r.publish(t, update("1"))
	r.drain(t)
	if got := sink.got(); got[len(got)-1] != `update:1:[{"id":1}]:`+ev[0].ID {
		t.Fatalf("after rebind to b: %v", got)
	}
	if _, groups := r.b.index.size(); groups != 1 {
		t.Fatalf("%d groups: the old group must be gone", groups)
	}
}

// A run of failed reads (Directus down) is told once per group, with one
// notice per (encoder, uid) for all its members, at the run's first event;
// the run ends with the next successful read, and a new run is told again.
func TestMissedRunsCoalesce(t *testing.T) {
	r := newRig(t, Options{Classifier: oneClass{}})
	r.reader.set("1", `{"id":1}`)
	sinks := []*recSink{}
	for _, tok := range []string{"a", "b", "c"} {
		_, s := r.sub(t, tok, AttachOptions{})
		sinks = append(sinks, s)
	}
	r.reader.fail = errors.New("directus down")
	var first []Event
	for i := range 5 {
		ev := r.publish(t, update("1"))
		r.drain(t)
		if i == 0 {
			first = ev
		}
	}
	for _, s := range sinks {
		if got := s.got(); !reflect.DeepEqual(got, []string{"ack", "notice:EVENTS_MISSED:" + first[0].ID + ":0"}) {
			t.Fatalf("five missed events: %v, want one notice", got)
		}
	}
	if m := r.b.Metrics(); m.EventsMissed != 15 {
		t.Fatalf("EventsMissed %d, want 15 (every subscriber-event counted)", m.EventsMissed)
	}
	r.reader.mu.Lock()
	r.reader.fail = nil
	r.reader.mu.Unlock()
	ok := r.publish(t, update("1"))
	r.drain(t)
	r.reader.mu.Lock()
	r.reader.fail = errors.New("down again")
	r.reader.mu.Unlock()
	again := r.publish(t, update("1"))
	r.drain(t)
	for _, s := range sinks {
		got := s.got()
		if got[2] != `update:1:[{"id":1}]:`+ok[0].ID || got[3] != "notice:EVENTS_MISSED:"+again[0].ID+":0" || len(got) != 4 {
			t.Fatalf("after recovery and a new run: %v", got)
		}
	}
}

// One token with many distinct queries (many groups) must not put another
// subscriber's reads behind its own: while all of its reads hang, and with
// fewer read slots than its groups, the other subscriber still gets event
// after event; when they come back, the many get everything in order.
func TestSlowGroupsDoNotHoldOthers(t *testing.T) {
	r := newRig(t, Options{ReadConcurrency: 4})
	r.reader.set("1", `{"title":"x"}`)
	release := make(chan struct{})
	r.reader.hold = map[string]chan struct{}{"many": release}
	var many []*recSink
	for i := range 20 {
		sink := newRecSink()
		many = append(many, sink)
		s := NewSubscription("c", Credentials{Token: "many"}, Query{"filter": map[string]any{"id": map[string]any{"_eq": i}}}, 0, nil, sink, textEncoder{})
		if err := r.b.Subscribe(context.Background(), s, AttachOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	_, one := r.sub(t, "one", AttachOptions{})
	events := r.publish(t, update("1"))
	one.waitN(t, 2)
	events = append(events, r.publish(t, update("1"))...)
	one.waitN(t, 3)
	close(release)
	r.drain(t)
	for i, sink := range many {
		got := sink.waitN(t, 3)
		want := []string{"ack", "update:1:[{\"title\":\"x\"}]:" + events[0].ID, "update:1:[{\"title\":\"x\"}]:" + events[1].ID}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("group %d got %v, want %v", i, got, want)
		}
	}
}

// signalClasses classes by token (class[token], else the token) and tells
// called of each credential it classes whose token is in watch.
type signalClasses struct {
	class  map[string]string
	watch  string
	called chan struct{}
}

func (c *signalClasses) Class(cred Credentials, _ string, _ Query) string {
	if cred.Token == c.watch {
		select {
		case c.called <- struct{}{}:
		default:
		}
	}
	if k, ok := c.class[cred.Token]; ok {
		return k
	}
	return cred.Token
}

// A rebind waits for the old group's pipeline before the new token takes
// effect: the old group's queued events are never read with the new token
// and shared with the old class (issue 18.7: a refreshed JWT carrying a
// stronger role read the old group for every member).
func TestRebindNeverReadsOldGroupWithNewToken(t *testing.T) {
	cls := &signalClasses{class: map[string]string{"a": "old", "x": "old", "a2": "new"}, watch: "a2", called: make(chan struct{}, 1)}
	r := newRig(t, Options{Classifier: cls})
	r.reader.set("1", `{"id":1}`)
	r.reader.set("2", `{"id":2}`)
	hold := make(chan struct{})
	r.reader.hold = map[string]chan struct{}{"a": hold}
	r.reader.started = make(chan string, 16)
	s1, _ := r.sub(t, "a", AttachOptions{})
	s2, _ := r.sub(t, "x", AttachOptions{})
	r.b.Suspend(s2) // s1 is the only member to read with
	r.publish(t, update("1"))
	<-r.reader.started // the old group reads e1 with a, held
	r.publish(t, update("2"))
	done := make(chan struct{})
	go func() { r.b.Rebind(s1, Credentials{Token: "a2"}); close(done) }()
	<-cls.called // the rebind runs on the worker
	close(hold)
	<-done
	r.drain(t)
	for _, call := range r.reader.callLog() {
		if call == "a2:2" {
			t.Fatalf("the old group read event 2 with the new token: %v", r.reader.callLog())
		}
	}
}

// A run's late removal does not unregister the group's next run: the lag
// still sees the group's oldest event (issue 19.4).
func TestPipeRegistrationSurvivesLateRemoval(t *testing.T) {
	var p pipes
	g := newGroup("c", "k", nil)
	g.pipe.since = 42
	p.add(g)    // the run that is ending
	p.add(g)    // the next run, started as soon as the first marked itself idle
	p.remove(g) // the first run's late removal
	if got := p.oldest(); got != 42 {
		t.Fatalf("oldest %d: the running group was unregistered", got)
	}
	p.remove(g)
	if got := p.oldest(); got != 0 {
		t.Fatalf("oldest %d after both runs ended", got)
	}
}

// ownerFilter classes per token, and knows who owns each key.
type ownerFilter struct {
	mu     sync.Mutex
	owner  map[string]string // key → token of its owner
	known  bool              // false: cannot tell
	called []string
}

func (f *ownerFilter) Class(c Credentials, _ string, _ Query) string { return "own:" + c.Token }
func (f *ownerFilter) Readable(_ context.Context, class, _ string, keys []string, batch string) ([]string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.called = append(f.called, class+"@"+batch)
	if !f.known {
		return nil, false
	}
	var out []string
	for _, k := range keys {
		if "own:"+f.owner[k] == class {
			out = append(out, k)
		}
	}
	return out, true
}

// A class that may read only what it owns is read only for the keys it
// owns (issue 21.2): the others read as nothing without a read, and their
// later delete is withheld, as after a read that returned nothing; when
// the filter cannot tell, every class reads.
func TestKeyFilterReadsOnlyForOwners(t *testing.T) {
	f := &ownerFilter{owner: map[string]string{"1": "a"}, known: true}
	r := newRig(t, Options{Classifier: f})
	r.reader.set("1", `{"id":1}`)
	_, a := r.sub(t, "a", AttachOptions{})
	_, b := r.sub(t, "b", AttachOptions{})
	ev := r.publish(t, update("1"))
	r.drain(t)
	if calls := r.reader.callLog(); len(calls) != 1 || calls[0] != "a:1" {
		t.Fatalf("reads %v, want only the owner's", calls)
	}
	if got := a.got(); got[len(got)-1] != `update:1:[{"id":1}]:`+ev[0].ID {
		t.Fatalf("owner got %v", got)
	}
	del1 := r.publish(t, del("1"))
	r.drain(t)
	if got := b.got(); len(got) != 1 {
		t.Fatalf("non-owner got %v, want only its ack", got)
	}
	if got := a.got(); got[len(got)-1] != `delete:1:["1"]:`+del1[0].ID {
		t.Fatalf("owner got %v", got)
	}
	f.mu.Lock()
	f.known = false
	f.mu.Unlock()
	r.publish(t, update("1"))
	r.drain(t)
	if calls := r.reader.callLog(); len(calls) != 3 {
		t.Fatalf("reads %v, want both classes read when the filter cannot tell", calls)
	}
}

// splitter classes per token; Split puts a key its class's user owns in
// own and the others in shared, under one share class.
type splitter struct{ owner map[string]string }

func (s *splitter) Class(c Credentials, _ string, _ Query) string { return "mine:" + c.Token }
func (s *splitter) Split(_ context.Context, class, _ string, keys []string, _ string) (own, shared []string, shareClass string, ok bool) {
	for _, k := range keys {
		if "mine:"+s.owner[k] == class {
			own = append(own, k)
		} else {
			shared = append(shared, k)
		}
	}
	return own, shared, "base", true
}

// The keys a class of one user shares with others (issue 21.3: a mixed
// rule's items of someone else) are read once for all of them, with the
// token of one who does not own them; the owner reads its own alone.
func TestKeySplitterSharesOthersItems(t *testing.T) {
	r := newRig(t, Options{Classifier: &splitter{owner: map[string]string{"1": "a"}}})
	r.reader.set("1", `{"id":1}`)
	_, a := r.sub(t, "a", AttachOptions{})
	_, b := r.sub(t, "b", AttachOptions{})
	_, c := r.sub(t, "c", AttachOptions{})
	// b's and c's reads wait until both asked: the second joins the first.
	hold := make(chan struct{})
	r.reader.mu.Lock()
	r.reader.hold = map[string]chan struct{}{"b": hold, "c": hold}
	r.reader.mu.Unlock()
	ev := r.publish(t, update("1"))
	until(t, "b's and c's groups share one read", func() bool {
		r.b.splitReads.mu.Lock()
		defer r.b.splitReads.mu.Unlock()
		for _, st := range r.b.splitReads.keys {
			if st.current != nil && st.current.waiters == 2 {
				return true
			}
		}
		return false
	})
	close(hold)
	r.drain(t)
	want := `update:1:[{"id":1}]:` + ev[0].ID
	for name, s := range map[string]*recSink{"a": a, "b": b, "c": c} {
		if got := s.got(); got[len(got)-1] != want {
			t.Fatalf("%s got %v", name, got)
		}
	}
	calls := strings.Join(r.reader.callLog(), " ")
	if n := len(r.reader.callLog()); n != 2 || !strings.Contains(calls, "a:1") || strings.Contains(calls, "b:1") == strings.Contains(calls, "c:1") {
		t.Fatalf("reads %q: want the owner's and one shared", calls)
	}
}

// until waits (up to 10 s) for cond, checking it every millisecond.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
