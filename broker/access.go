package broker

import (
	"context"
	"sync"
	"time"
)

// Credentials are what a subscription reads Directus with.
type Credentials struct {
	// Token is the Directus token reads are made with ("" = the public role).
	Token string
	// Principal is what the Classifier knows about the token's owner (for
	// Directus: user, role, how the token carries it). The broker only hands
	// it back to the Classifier.
	Principal any
	// Addr is the client's address ("" unknown). Reads for a class whose
	// answer depends on where the request comes from (AddrScoped) are made
	// on the client's behalf from it.
	Addr string
}

// AddrScoped is implemented by a Classifier whose classes can depend on the
// client's address (Directus policies with ip_access): the members of such a
// class share one address, and its reads carry it (WithClientAddr).
type AddrScoped interface {
	AddrScoped(class string) bool
}

// Classifier decides which subscriptions may share one read: the broker
// groups the subscriptions of a collection by (class, query) and reads once
// per group, with the token of any member.
//
// Class must be pure and quick: it runs on the dispatch workers (at attach,
// rebind and after an access change) and may not do I/O.
type Classifier interface {
	// Class names the access class of cred for reads of collection with q.
	// Two credentials may get one class only when Directus is guaranteed to
	// answer every read the broker makes for such a subscription
	// identically for both.
	Class(cred Credentials, collection string, q Query) string
}

// TokenClasses is the Classifier that shares nothing between tokens: one
// class per token. Tests of the domain use it; the broker's assembly uses
// Directus's permission model (package directus).
type TokenClasses struct{}

// Class implements Classifier.
func (TokenClasses) Class(c Credentials, _ string, _ Query) string { return "token:" + c.Token }

// AccessWatcher keeps the Classifier current: it is told of the events of
// the system collections that decide access, and asked to reread
// everything every Options.AccessRefresh.
type AccessWatcher interface {
	// IsAccessEvent reports whether e is such a change. Access events are
	// not dispatched to subscribers (nobody subscribes to system
	// collections): the broker rereads, then regroups every subscription
	// before it dispatches any event published after them.
	IsAccessEvent(e Event) bool
	// AccessChanged rereads what events changed. live are the credentials
	// of the subscriptions now; it returns the tokens among them that
	// Directus refuses now (their subscriptions are suspended and told).
	AccessChanged(ctx context.Context, events []Event, live []Credentials) (refused []string, err error)
	// Refresh rereads everything the classes depend on.
	Refresh(ctx context.Context, live []Credentials) error
}

func (b *Broker) isAccessEvent(e Event) bool {
	return b.opts.Access != nil && b.opts.Access.IsAccessEvent(e)
}

// barrier holds every shard at one point of its queue: the place of an
// access event among the events, or a refresh.
type barrier struct {
	event   *Event // nil for a refresh
	parked  sync.WaitGroup
	release chan struct{}
	done    <-chan struct{}
}

func (b *Broker) newBarrier(e Event) *barrier {
	b.doubts.add(e) // until applied, the groups it concerns read apart
	bar := &barrier{event: &e, release: make(chan struct{}), done: b.done}
	bar.parked.Add(len(b.shards))
	return bar
}

// park runs on a shard worker: it stops the shard until release.
func (bar *barrier) park() {
	bar.parked.Done()
	select {
	case <-bar.release:
	case <-bar.done:
	}
}

// accessWorker applies access changes one after another, in the order of
// their events. For each: the reread (I/O) runs while the shards still
// dispatch the events published before the change; once every shard has
// reached the change's barrier, all subscriptions are regrouped, then the
// shards go on. Changes queued meanwhile share one reread.
type accessWorker struct {
	b       *Broker
	mu      sync.Mutex
	pending []*barrier
	wake    chan struct{}
}

func newAccessWorker(b *Broker) *accessWorker {
	return &accessWorker{b: b, wake: make(chan struct{}, 1)}
}

func (w *accessWorker) enqueue(bar *barrier) {
	w.mu.Lock()
	w.pending = append(w.pending, bar)
	w.mu.Unlock()
	signal(w.wake)
}

func (w *accessWorker) run() {
	b := w.b
	defer b.wg.Done()
	var tick <-chan time.Time
	if b.opts.AccessRefresh > 0 && b.opts.Access != nil {
		t := time.NewTicker(b.opts.AccessRefresh)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-b.done:
			return
		case <-w.wake:
			w.mu.Lock()
			batch := w.pending
			w.pending = nil
			w.mu.Unlock()
			if len(batch) > 0 {
				w.apply(batch)
			}
		case <-tick:
			w.refresh()
		}
	}
}

// apply rereads for the access events of batch (in order) and regroups
// once the first barrier holds every shard.
func (w *accessWorker) apply(batch []*barrier) {
	b := w.b
	events := make([]Event, len(batch))
	for i, bar := range batch {
		events[i] = *bar.event
	}
	// Stop and Close cancel it (readCtx): a shutdown must not wait for a
	// reread, and the events behind the change are then reported.
	ctx, cancel := context.WithTimeout(b.readCtx, b.opts.AccessTimeout)
	refused, err := b.opts.Access.AccessChanged(ctx, events, b.liveCredentials())
	cancel()
	if err != nil {
		b.log.Warn().Err(err).Int("events", len(events)).Msg("access change: reread failed; subscribers who cannot be proven alike read apart until it succeeds")
	}
	batch[0].parked.Wait()
	b.regroup(refused)
	b.doubts.remove(len(events))
	b.metrics.AccessChanges.Add(int64(len(events)))
	for _, bar := range batch {
		close(bar.release)
	}
}

// refresh rereads everything (no event orders it: the reread runs first,
// then the shards are held only for the regroup).
func (w *accessWorker) refresh() {
	b := w.b
	// Stop and Close cancel it (readCtx): a shutdown must not wait for a
	// reread, and the events behind the change are then reported.
	ctx, cancel := context.WithTimeout(b.readCtx, b.opts.AccessTimeout)
	err := b.opts.Access.Refresh(ctx, b.liveCredentials())
	cancel()
	if err != nil {
		b.log.Warn().Err(err).Msg("access refresh failed")
	}
	bar := &barrier{release: make(chan struct{}), done: b.done}
	bar.parked.Add(len(b.shards))
	for _, sh := range b.shards {
		sh.queue.pushControl(sh.quiesced(bar.park))
	}
	parked := make(chan struct{})
	go func() { bar.parked.Wait(); close(parked) }()
	select {
	case <-parked:
	case <-b.done:
		return
	}
	b.regroup(nil)
	close(bar.release)
}

// Reclassify rereads everything now and regroups (what the refresh
// interval does); for tests and operators.
func (b *Broker) Reclassify() {
	if b.opts.Access != nil {
		b.access.refresh()
	}
}

// liveCredentials are the distinct credentials of the attached
// subscriptions.
func (b *Broker) liveCredentials() []Credentials {
	seen := map[string]bool{}
	var out []Credentials
	b.index.each(func(s *Subscription) {
		c := s.Credentials()
		if !seen[c.Token] {
			seen[c.Token] = true
			out = append(out, c)
		}
	})
	return out
}

// regroup moves every subscription to the group of its class now, and
// suspends those holding a refused token. Every shard is held meanwhile.
func (b *Broker) regroup(refused []string) {
	moved := b.index.regroup(b.classOf)
	b.metrics.Regrouped.Add(int64(moved))
	if len(refused) == 0 {
		return
	}
	bad := map[string]bool{}
	for _, t := range refused {
		bad[t] = true
	}
	var tell []*Subscription
	b.index.each(func(s *Subscription) {
		if bad[s.Token()] {
			s.suspended.Store(true)
			tell = append(tell, s)
		}
	})
	for _, s := range tell {
		s.Sink.TokenExpired(s.Token())
	}
}
