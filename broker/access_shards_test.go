package broker

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// subIn attaches a subscription of token to collection.
func (r *rig) subIn(t *testing.T, collection, token string) (*Subscription, *recSink) {
	t.Helper()
	sink := newRecSink()
	s := NewSubscription(collection, Credentials{Token: token}, nil, 0, nil, sink, textEncoder{})
	if err := r.b.Subscribe(context.Background(), s, AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	return s, sink
}

func userChange(user string) Event {
	return Event{Action: ActionUpdate, Collection: "users", Keys: []string{user}, Payload: json.RawMessage(`{}`)}
}

// An access change concerning a subscription holds its shard only: while
// its reread runs, another shard's collections are delivered (issue 19.2:
// a change of one user paused every collection), and the held shard's
// events wait for the regroup.
func TestConcernedChangeHoldsOnlyItsShards(t *testing.T) {
	w := &genWatcher{reread: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, Options{Shards: 2, Classifier: w, Access: w})
	released := sync.OnceFunc(func() { close(w.release) })
	t.Cleanup(released)
	other := otherShardCollection(r.b, "c")
	r.reader.set("1", `{"id":1}`)
	_, su := r.subIn(t, "c", "u")
	_, sv := r.subIn(t, other, "v")
	r.publish(t, userChange("u"))
	<-w.reread // the reread is held
	r.publish(t, update("1"), Event{Action: ActionUpdate, Collection: other, Keys: []string{"1"}})
	sv.waitN(t, 2) // ack, and the other shard's event meanwhile
	if got := su.got(); len(got) != 1 {
		t.Fatalf("u got %v while its shard waits for the change", got)
	}
	released()
	su.waitN(t, 2)
	r.drain(t)
	if g := r.b.index.groups("c")[0]; g.class != "1:u" {
		t.Fatalf("u's class after the change: %q", g.class)
	}
}

// A subscription the change concerns that attaches on a shard the change
// does not hold, while it is pending, is classified again once it is
// applied: it never keeps the class it got under the old rules.
func TestAttachElsewhereDuringChangeIsClassifiedAgain(t *testing.T) {
	w := &genWatcher{reread: make(chan struct{}), release: make(chan struct{})}
	r := newRig(t, Options{Shards: 2, Classifier: w, Access: w})
	released := sync.OnceFunc(func() { close(w.release) })
	t.Cleanup(released)
	other := otherShardCollection(r.b, "c")
	r.subIn(t, "c", "u")
	r.publish(t, userChange("u"))
	<-w.reread
	s, _ := r.subIn(t, other, "u") // on the shard the change does not hold
	if g := r.b.index.groupOf(s); g.class != "0:u" {
		t.Fatalf("attached under %q", g.class)
	}
	released()
	r.drain(t)
	until(t, "the change is settled", func() bool { return len(r.b.doubts.events()) == 0 })
	if g := r.b.index.groupOf(s); g.class != "1:u" {
		t.Fatalf("the subscription attached during the change kept class %q, want 1:u", g.class)
	}
}

// Two pending changes, each holding the shard where a subscription the
// other concerns attaches: both are applied (an attach never waits for a
// change, so the access worker cannot deadlock) and both subscriptions end
// in their new classes.
func TestCrossingChangesAndAttachesDoNotDeadlock(t *testing.T) {
	w := &gatedGen{rereads: make(chan struct{}, 4), release: make(chan struct{})}
	r := newRig(t, Options{Shards: 2, Classifier: w, Access: w})
	released := sync.OnceFunc(func() { close(w.release) })
	t.Cleanup(released)
	other := otherShardCollection(r.b, "c")
	r.subIn(t, "c", "u")
	r.subIn(t, other, "v")
	r.publish(t, userChange("u")) // holds c's shard
	<-w.rereads
	r.publish(t, userChange("v")) // holds other's shard; applied after the first
	// Each shard is parked at its change (an attach there waits for its
	// release); each attach is of the user the other shard's change
	// concerns.
	attach := func(collection, token string) chan *Subscription {
		ch := make(chan *Subscription, 1)
		s := NewSubscription(collection, Credentials{Token: token}, nil, 0, nil, newRecSink(), textEncoder{})
		go func() {
			if err := r.b.Subscribe(context.Background(), s, AttachOptions{}); err != nil {
				s = nil
			}
			ch <- s
		}()
		return ch
	}
	cu, cv := attach(other, "u"), attach("c", "v")
	released()
	su, sv := <-cu, <-cv
	if su == nil || sv == nil {
		t.Fatal("an attach failed")
	}
	r.drain(t)
	until(t, "both changes are settled", func() bool { return len(r.b.doubts.events()) == 0 })
	if g := r.b.index.groupOf(su); g.class != "2:u" {
		t.Fatalf("u attached during the changes: class %q, want 2:u (both applied)", g.class)
	}
	if g := r.b.index.groupOf(sv); g.class != "2:v" {
		t.Fatalf("v attached during the changes: class %q, want 2:v", g.class)
	}
}

// gatedGen is genWatcher for several rereads: each reports on rereads and
// waits for release.
type gatedGen struct {
	genWatcher
	rereads chan struct{}
	release chan struct{}
}

func (w *gatedGen) AccessChanged(ctx context.Context, _ []Event, _ []Credentials) ([]string, error) {
	w.rereads <- struct{}{}
	select {
	case <-w.release:
	case <-ctx.Done():
	}
	w.gen.Add(1)
	return nil, nil
}

// revalidating classes every token alike and, at a refresh, refuses the
// tokens in refuse (a Revalidator).
type revalidating struct {
	switchClasses
	refuse []string
}

func (r *revalidating) Revalidate(context.Context, []Credentials) []string { return r.refuse }

// RefreshAccess refreshes now, and the tokens the watcher's revalidation
// refuses are suspended and told (a secret Directus no longer uses let
// them in).
func TestRefreshAccessSuspendsRevalidatedTokens(t *testing.T) {
	w := &revalidating{switchClasses: switchClasses{classes: map[string]string{"a": "k", "b": "k"}, next: map[string]string{"a": "k", "b": "k"}}, refuse: []string{"a"}}
	r := newRig(t, Options{Classifier: w, Access: w})
	r.reader.set("1", `{"id":1}`)
	_, a := r.sub(t, "a", AttachOptions{})
	_, b := r.sub(t, "b", AttachOptions{})
	r.b.RefreshAccess()
	until(t, "a is told its token was refused", func() bool { return a.expiredCount() > 0 })
	ev := r.publish(t, update("1"))
	r.drain(t)
	if got := b.got(); got[len(got)-1] != `update:1:[{"id":1}]:`+ev[0].ID {
		t.Fatalf("b got %v", got)
	}
	if got := a.got(); strings.HasPrefix(got[len(got)-1], "update:") {
		t.Fatalf("a, refused, got data: %v", got)
	}
}

// The classes of a share class that read one batch one after another (one
// read slot: the second starts after the first ended, too late to join
// it) still make one shared read: the batch's answer is kept for them.
func TestSharedReadKeptForTheBatch(t *testing.T) {
	r := newRig(t, Options{ReadConcurrency: 1, Classifier: &splitter{owner: map[string]string{"1": "a"}}})
	r.reader.set("1", `{"id":1}`)
	r.sub(t, "a", AttachOptions{})
	_, b := r.sub(t, "b", AttachOptions{})
	_, c := r.sub(t, "c", AttachOptions{})
	ev := r.publish(t, update("1"))
	r.drain(t)
	want := `update:1:[{"id":1}]:` + ev[0].ID
	for name, s := range map[string]*recSink{"b": b, "c": c} {
		if got := s.got(); got[len(got)-1] != want {
			t.Fatalf("%s got %v", name, got)
		}
	}
	if calls := r.reader.callLog(); len(calls) != 2 {
		t.Fatalf("reads %v: want the owner's and one shared", calls)
	}
}
