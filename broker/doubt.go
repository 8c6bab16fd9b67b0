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

// quietAccess applies e without a barrier when no attached subscription is
// concerned by it (see DoubtScope, Forgetter); false when it needs one.
func (b *Broker) quietAccess(e Event) bool {
	scope, ok := b.opts.Access.(DoubtScope)
	f, ok2 := b.opts.Access.(Forgetter)
	if !ok || !ok2 {
		return false
	}
	concerned := false
	b.index.each(func(s *Subscription) {
		if !concerned && scope.Concerns(e, s.Credentials()) {
			concerned = true
		}
	})
	if concerned {
		return false
	}
	f.Forget(e)
	b.metrics.AccessChanges.Add(1)
	return true
}

// doubts are the access events that arrived and whose regroup has not run.
type doubts struct {
	mu     sync.Mutex
	events []Event
}

func (d *doubts) add(e Event) {
	d.mu.Lock()
	d.events = append(d.events, e)
	d.mu.Unlock()
}

// remove drops the first n events (they are applied in arrival order).
func (d *doubts) remove(n int) {
	d.mu.Lock()
	d.events = append([]Event(nil), d.events[min(n, len(d.events)):]...)
	d.mu.Unlock()
}

func (d *doubts) pending() []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.events) == 0 {
		return nil
	}
	return append([]Event(nil), d.events...)
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
