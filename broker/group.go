package broker

import "sync"

// group is every subscription of one collection sharing one access class
// and one query: one read, made with any member's token, serves them all.
type group struct {
	collection string
	class      string
	query      Query
	queryKey   string // query.Key(), kept: the cluster key is built per delivery

	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	actions [3]int          // subscriptions wanting create, update, delete
	cached  []*Subscription // snapshot of subs, nil when stale
	// known is shared with replays of the group's subscriptions, so a
	// resume withholds the deletes live delivery would withhold.
	known *keyMemory
	// shareReads makes reads shared with other groups of the same class
	// and query that read the same keys at the same time (a replay: many
	// subscribers resuming from one event).
	shareReads bool
	// missing is set during a run of failed reads (guarded by mu): its
	// first event was told, the others are only counted.
	missing bool
	// pipe runs the group's deliveries (see pipe.go).
	pipe pipeline
	// addr, when set, is the one client address of the members of an
	// address-scoped class: reads are made on its behalf.
	addr string
}

func newGroup(collection, class string, q Query) *group {
	return &group{collection: collection, class: class, query: q, queryKey: q.Key(), subs: map[*Subscription]struct{}{}, known: &keyMemory{}}
}

var allActions = [3]Action{ActionCreate, ActionUpdate, ActionDelete}

func (g *group) add(s *Subscription) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.subs[s] = struct{}{}
	g.cached = nil
	for i, a := range allActions {
		if s.Actions.Has(a) {
			g.actions[i]++
		}
	}
}

func (g *group) remove(s *Subscription) (empty bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.subs[s]; !ok {
		return len(g.subs) == 0
	}
	delete(g.subs, s)
	g.cached = nil
	for i, a := range allActions {
		if s.Actions.Has(a) {
			g.actions[i]--
		}
	}
	return len(g.subs) == 0
}

// wants reports whether any subscription of g receives action a, so a read
// nobody would see is skipped.
func (g *group) wants(a Action) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, b := range allActions {
		if a == b {
			return g.actions[i] > 0
		}
	}
	return false
}

// members returns the subscriptions; the slice is shared and read-only, and
// rebuilt only after a change, so a steady stream of events allocates nothing
// per subscriber.
func (g *group) members() []*Subscription {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cached == nil {
		g.cached = make([]*Subscription, 0, len(g.subs))
		for s := range g.subs {
			g.cached = append(g.cached, s)
		}
	}
	return g.cached
}

// readToken picks the token of a live member of members to read with,
// skipping those in refused. Members of one class read alike, so any will
// do.
func readToken(members []*Subscription, refused map[string]bool) (string, bool) {
	for _, s := range members {
		if s.closed.Load() || s.suspended.Load() {
			continue
		}
		if t := s.Token(); !refused[t] {
			return t, true
		}
	}
	return "", false
}

// keyMemory remembers, per group, whether the latest read of a key showed the
// item. A delete is withheld from a group only when its latest read of that
// key returned nothing: the group could not see the item, so it must not
// learn that it existed. Bounded: when full, it forgets everything, which
// errs towards sending deletes (as Directus itself always does).
type keyMemory struct {
	mu     sync.Mutex
	hidden map[string]bool
}

const keyMemoryMax = 4096

func (k *keyMemory) record(key string, visible bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.hidden == nil {
		k.hidden = map[string]bool{}
	}
	if len(k.hidden) >= keyMemoryMax {
		clear(k.hidden)
	}
	k.hidden[key] = !visible
}

func (k *keyMemory) isHidden(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.hidden[key]
}

// forgetVisible drops key unless it is recorded hidden.
func (k *keyMemory) forgetVisible(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.hidden[key] {
		delete(k.hidden, key)
	}
}
