package broker

import (
	"context"
	"encoding/json"
	"sync"
)

// Directus changes its rules the moment an access change is written; the
// broker learns of it when the Flow's POST arrives, and regroups only once
// every shard has reached that event's place in the queue. The events queued
// before it are read after the change, so under the new rules: read once
// for a class from before the change and shared, one member's new view
// would reach the others. So from the moment an access event arrives until
// its regroup ran, a group any of whose members the change may concern
// reads apart: once per token of those members, once for the others, and
// each gets its own read's view.

// DoubtScope is implemented by an AccessWatcher that can tell which
// subscriptions an access event may concern (a change of one user concerns
// only that user's tokens). Without it every subscription is concerned.
type DoubtScope interface {
	Concerns(e Event, c Credentials) bool
}

// Forgetter is implemented by an AccessWatcher that can apply an access
// event concerning no attached subscription without holding the shards: it
// forgets what the event makes stale (a user's role), to be read again
// when needed. So a sign-up (users.create) on a busy site does not pause
// every collection's delivery for a reread.
type Forgetter interface {
	Forget(e Event)
}

// accessBarrier makes the barrier of access event e, held by the shards of
// the subscriptions it may concern (every shard without a DoubtScope), and
// records e as pending until it is applied. nil: e concerns no attached
// subscription and was applied without a barrier (the Forgetter forgot
// what it makes stale), so a sign-up (users.create) on a busy site pauses
// nobody.
//
// A subscription it concerns may attach (or rebind) on a shard the barrier
// does not hold while e is pending: it is classified before the reread and
// would keep that class. It does not wait for the change (two such waits
// for two changes, each on the other's held shard, deadlock the access
// worker: NOTES.md); it is recorded in the doubt (attached), and once the
// change is applied a task on its own shard classifies it again; until
// then the doubt stays pending, so its group reads apart for it.
func (b *Broker) accessBarrier(e Event) *barrier {
	scope, scoped := b.opts.Access.(DoubtScope)
	f, forgets := b.opts.Access.(Forgetter)
	shards := make([]bool, len(b.shards))
	d := &b.doubts
	// Under the doubts' lock: an attach records itself (classified) after
	// it joined the index, under the same lock, so it is either seen here
	// or sees this doubt.
	d.mu.Lock()
	d.epoch++
	x := &doubt{event: e, held: shards}
	concerned := false
	if scoped {
		b.index.each(func(s *Subscription) {
			if scope.Concerns(e, s.Credentials()) {
				shards[b.shardIndex(s.Collection)] = true
				concerned = true
			}
		})
	}
	if scoped && forgets && !concerned {
		f.Forget(e) // under the lock: an attach that missed the scan classifies after it
		d.mu.Unlock()
		b.metrics.AccessChanges.Add(1)
		return nil
	}
	if !scoped {
		for i := range shards {
			shards[i] = true
		}
	}
	d.pending = append(d.pending, x)
	d.mu.Unlock()
	bar := b.newBarrier(&e, shards)
	// Until applied, the groups it concerns read apart.
	bar.doubt = x
	return bar
}

// doubts are the access events that arrived and whose regroup has not run.
type doubts struct {
	mu      sync.Mutex
	pending []*doubt
	// epoch counts the access events seen: an attach that saw one arrive
	// while it classified classifies again (classified).
	epoch uint64
}

// doubt is one pending access event.
type doubt struct {
	event Event
	// held are the shards its barrier holds (fixed when it is made).
	held []bool
	// attached are the subscriptions it may concern that attached or
	// rebound on another shard while it was pending; sealed once the
	// change was applied (later ones classify under the new rules).
	attached []*Subscription
	sealed   bool
}

// remove drops x (applied, or never queued).
func (d *doubts) remove(x *doubt) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, p := range d.pending {
		if p == x {
			d.pending = append(d.pending[:i:i], d.pending[i+1:]...)
			break
		}
	}
}

func (d *doubts) events() []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.pending) == 0 {
		return nil
	}
	out := make([]Event, len(d.pending))
	for i, x := range d.pending {
		out[i] = x.event
	}
	return out
}

// classifying returns the epoch to pass to classified, taken before a
// subscription is classified.
func (d *doubts) classifying() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.epoch
}

// classified runs on s's worker once s was classified and joined the
// index: s is recorded with every pending change that may concern it and
// does not hold its shard; and when an access event arrived while s was
// classified (since: the epoch before), s is classified again now, for a
// change applied quietly meanwhile (a Forget) may have made its class stale.
func (b *Broker) classified(s *Subscription, since uint64) {
	d := &b.doubts
	d.mu.Lock()
	arrived := d.epoch != since
	scope, _ := b.opts.Access.(DoubtScope)
	i := b.shardIndex(s.Collection)
	for _, x := range d.pending {
		if !x.sealed && !x.held[i] && (scope == nil || scope.Concerns(x.event, s.Credentials())) {
			x.attached = append(x.attached, s)
		}
	}
	d.mu.Unlock()
	if arrived {
		b.reclass(s, false)
	}
}

// settle ends the doubts of an applied batch: the subscriptions that
// attached elsewhere meanwhile are classified again on their own shards
// (refused tokens suspended), and only then are the doubts dropped.
func (b *Broker) settle(batch []*barrier, refused []string) {
	d := &b.doubts
	d.mu.Lock()
	var late []*Subscription
	seen := map[*Subscription]bool{}
	var xs []*doubt
	for _, bar := range batch {
		x := bar.doubt
		x.sealed = true
		xs = append(xs, x)
		for _, s := range x.attached {
			if !seen[s] {
				seen[s] = true
				late = append(late, s)
			}
		}
		x.attached = nil
	}
	d.mu.Unlock()
	done := func() {
		for _, x := range xs {
			d.remove(x)
		}
	}
	if len(late) == 0 {
		done()
		return
	}
	bad := map[string]bool{}
	for _, t := range refused {
		bad[t] = true
	}
	byShard := map[int][]*Subscription{}
	for _, s := range late {
		i := b.shardIndex(s.Collection)
		byShard[i] = append(byShard[i], s)
	}
	var left sync.WaitGroup
	left.Add(len(byShard))
	for i, subs := range byShard {
		// Queued behind whatever the shard runs now (the attaches among
		// it), never waited for here: the access worker goes on.
		b.shards[i].queue.pushControl(func() {
			defer left.Done()
			for _, s := range subs {
				b.reclass(s, bad[s.Token()])
			}
		})
	}
	go func() { left.Wait(); done() }()
}

// reclass moves s to the group of its class now (on its shard's worker),
// after both groups delivered what came before; suspended when its token
// was refused.
func (b *Broker) reclass(s *Subscription, refused bool) {
	if s.closed.Load() {
		return
	}
	if old := b.index.groupOf(s); old != nil {
		if class := b.classOf(s); old.class != class {
			old.pipe.waitIdle()
			if g := b.index.find(s.Collection, class, s.queryKey); g != nil {
				g.pipe.waitIdle()
			}
			b.index.move(s, class)
			b.metrics.Regrouped.Add(1)
		}
	}
	if refused {
		s.suspended.Store(true)
		s.Sink.TokenExpired(s.Token())
	}
}

// part is members of a group that read with one token's answer.
type part []*Subscription

// apart splits g's live members into parts that must read apart while the
// access events pending are not applied: each concerned token alone, the
// others together. nil when one read serves them all.
func (b *Broker) apart(g *group, pending []Event) []part {
	scope, _ := b.opts.Access.(DoubtScope)
	byToken := map[string]part{}
	var rest part
	tokens := map[string]bool{}
	for _, s := range g.members() {
		if s.closed.Load() {
			continue
		}
		c := s.Credentials()
		tokens[c.Token] = true
		concerned := scope == nil
		for _, e := range pending {
			if concerned {
				break
			}
			concerned = scope.Concerns(e, c)
		}
		if concerned {
			byToken[c.Token] = append(byToken[c.Token], s)
		} else {
			rest = append(rest, s)
		}
	}
	if len(tokens) <= 1 || len(byToken) == 0 {
		return nil
	}
	parts := make([]part, 0, len(byToken)+1)
	for _, p := range byToken {
		parts = append(parts, p)
	}
	if len(rest) > 0 {
		parts = append(parts, rest)
	}
	return parts
}

// deliverApart is deliver for a group read in parts: each part's view from
// its own read. A key counts as seen by the group (for the delete rule)
// only when every part saw it, so no part learns of a deletion it could not
// see.
func (b *Broker) deliverApart(ctx context.Context, g *group, events []Event, parts []part) error {
	keys, deleted := keysToRead(g, events)
	type result struct {
		items   map[string]json.RawMessage
		refused []string
		err     error
	}
	results := make([]result, len(parts))
	if len(keys) > 0 {
		for i, p := range parts {
			// Never joined with another read: the parts differ by token.
			r := &results[i]
			r.items, r.refused, r.err = b.read(ctx, g, p, keys, false)
		}
	}
	b.metrics.ApartReads.Add(int64(len(parts)))
	var firstErr error
	for _, e := range events {
		if !g.wants(e.Action) {
			continue
		}
		common := map[string]json.RawMessage{}
		for _, k := range e.Keys {
			seen := true
			for _, r := range results {
				if _, ok := r.items[k]; !ok {
					seen = false
				}
			}
			if seen {
				common[k] = results[0].items[k]
			}
		}
		for i, p := range parts {
			if e.Action != ActionDelete && results[i].err != nil {
				if firstErr == nil {
					firstErr = results[i].err
				}
				for _, s := range p {
					if !s.closed.Load() && s.Actions.Has(e.Action) {
						b.missed(s, e, readFailedNotice)
					}
				}
				continue
			}
			if d, ok := view(e, results[i].items, deleted, g.known.isHidden); ok {
				b.sendTo(p, e.Action, d)
			}
		}
		g.known.observe(e, common, deleted)
	}
	for i, p := range parts {
		for _, token := range results[i].refused {
			b.tokenRefusedTo(p, token)
		}
	}
	return firstErr
}
