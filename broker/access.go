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

// KeyFilter is implemented by a Classifier that knows, for some classes,
// which items their members may read at all: Directus answers a read by a
// user whose only rule on the collection is owner = $CURRENT_USER with the
// items that user owns, and nothing otherwise. Readable returns the keys of
// a batch a class may read (the others would read as nothing, so they are
// not read: Directus is asked only for the owners), and false when it
// cannot tell (every key is read, as without it). batch identifies the
// event batch, so one lookup serves every class of it.
type KeyFilter interface {
	Readable(ctx context.Context, class, collection string, keys []string, batch string) (readable []string, ok bool)
}

// KeySplitter is implemented by a Classifier whose classes of one user may
// share part of a read with others: Split returns the keys a class must
// read with its own members' tokens (own) and those every class of
// shareClass answers alike (shared: one read, made with any of their
// tokens, serves them all). false: read everything as without it.
type KeySplitter interface {
	Split(ctx context.Context, class, collection string, keys []string, batch string) (own, shared []string, shareClass string, ok bool)
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

// Revalidator is implemented by an AccessWatcher that, at a refresh, may
// have tokens in use checked again with Directus (after the secret it
// verified tokens with turned out not to be Directus's any more): it
// returns those refused, whose subscriptions are suspended and told.
type Revalidator interface {
	Revalidate(ctx context.Context, live []Credentials) (refused []string)
}

// Deliverer is implemented by an AccessWatcher some of whose access events
// are item events subscribers see as well (a change of an item that a rule
// reads through the user, $CURRENT_USER.org.tier): such an event is applied
// as an access change and dispatched too, behind the change's barrier in
// its shard, so it is read with the classes after the change.
type Deliverer interface {
	Delivers(e Event) bool
}

func (b *Broker) isAccessEvent(e Event) bool {
	return b.opts.Access != nil && b.opts.Access.IsAccessEvent(e)
}

// delivered reports whether the access event e is dispatched as well.
func (b *Broker) delivered(e Event) bool {
	d, ok := b.opts.Access.(Deliverer)
	return ok && d.Delivers(e)
}

// barrier holds shards at one point of their queues: the place of an access
// event among the events (in the shards holding subscriptions it may
// concern), or a refresh (in every shard).
type barrier struct {
	event *Event // nil for a refresh
	// at has a channel per shard the barrier holds (nil for the others),
	// closed once that shard parked.
	at      []chan struct{}
	doubt   *doubt // nil for a refresh
	release chan struct{}
	done    <-chan struct{}
}

func (b *Broker) newBarrier(e *Event, shards []bool) *barrier {
	bar := &barrier{event: e, at: make([]chan struct{}, len(b.shards)), release: make(chan struct{}), done: b.done}
	for i, held := range shards {
		if held {
			bar.at[i] = make(chan struct{})
		}
	}
	return bar
}

// park returns the task that stops shard i at the barrier until release.
func (bar *barrier) park(i int) func() {
	return func() {
		close(bar.at[i])
		select {
		case <-bar.release:
		case <-bar.done:
		}
	}
}

// push queues the barrier into the shards it holds.
func (bar *barrier) push(shards []*shard) {
	for i, sh := range shards {
		if bar.at[i] != nil {
			sh.queue.pushControl(sh.quiesced(bar.park(i)))
		}
	}
}

// parkedAll waits until every shard held by the first barrier of batch
// holding it has parked there (false: closed meanwhile). A shard held by
// several stops at the first; the others are behind it in its queue.
func parkedAll(batch []*barrier, shards int, done <-chan struct{}) bool {
	for i := range shards {
		for _, bar := range batch {
			if bar.at[i] == nil {
				continue
			}
			select {
			case <-bar.at[i]:
			case <-done:
				return false
			}
			break
		}
	}
	return true
}

// held are the shards any barrier of batch holds.
func held(batch []*barrier, shards int) []bool {
	out := make([]bool, shards)
	for _, bar := range batch {
		for i, c := range bar.at {
			out[i] = out[i] || c != nil
		}
	}
	return out
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
	// now asks for a refresh at once (RefreshAccess).
	now chan struct{}
}

func newAccessWorker(b *Broker) *accessWorker {
	return &accessWorker{b: b, wake: make(chan struct{}, 1), now: make(chan struct{}, 1)}
}

// RefreshAccess asks for a refresh now (as at Options.AccessRefresh),
// without waiting for it: the assembly asks when tokens in use may have
// been let in on grounds Directus does not share any more.
func (b *Broker) RefreshAccess() {
	if b.opts.Access != nil {
		signal(b.access.now)
	}
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
		case <-w.now:
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
	// EndAccessChanges, Stop and Close cancel it (accessCtx): a shutdown
	// must not wait for a reread.
	ctx, cancel := context.WithTimeout(b.accessCtx, b.opts.AccessTimeout)
	refused, err := b.opts.Access.AccessChanged(ctx, events, b.liveCredentials())
	cancel()
	if err != nil {
		b.log.Warn().Err(err).Int("events", len(events)).Msg("access change: reread failed; subscribers who cannot be proven alike read apart until it succeeds")
	}
	if !parkedAll(batch, len(b.shards), b.done) {
		return
	}
	// Only the held shards' collections: the others' workers run on and
	// held no subscription the changes concern when they arrived; those
	// that attached there since are classified again on their own shards
	// (settle), and the changes stay pending (read apart) until then.
	b.regroup(refused, held(batch, len(b.shards)))
	// Before the release: the events behind the barriers read shared again
	// (unless a late attach keeps a change pending until it is classified).
	b.settle(batch, refused)
	b.metrics.AccessChanges.Add(int64(len(events)))
	for _, bar := range batch {
		close(bar.release)
	}
}

// refresh rereads everything (no event orders it: the reread runs first,
// then the shards are held only for the regroup).
func (w *accessWorker) refresh() {
	b := w.b
	// EndAccessChanges, Stop and Close cancel it (accessCtx): a shutdown
	// must not wait for a reread.
	ctx, cancel := context.WithTimeout(b.accessCtx, b.opts.AccessTimeout)
	live := b.liveCredentials()
	err := b.opts.Access.Refresh(ctx, live)
	var refused []string
	if rv, ok := b.opts.Access.(Revalidator); ok {
		refused = rv.Revalidate(ctx, live)
	}
	cancel()
	if err != nil {
		b.log.Warn().Err(err).Msg("access refresh failed")
	}
	all := make([]bool, len(b.shards))
	for i := range all {
		all[i] = true
	}
	bar := b.newBarrier(nil, all)
	bar.push(b.shards)
	if !parkedAll([]*barrier{bar}, len(b.shards), b.done) {
		return
	}
	b.regroup(refused, all)
	close(bar.release)
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

// regroup moves every subscription of the collections of the held shards to
// the group of its class now, and suspends those holding a refused token.
// The held shards are parked meanwhile.
func (b *Broker) regroup(refused []string, shards []bool) {
	moved := b.index.regroup(b.classOf, func(collection string) bool { return shards[b.shardIndex(collection)] })
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
