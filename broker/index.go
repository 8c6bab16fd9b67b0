package broker

import "sync"

// index maps collection → groups → subscriptions under one lock, so an event
// touches only the subscriptions of its own collection.
type index struct {
	mu          sync.RWMutex
	collections map[string]map[groupKey]*group
	count       int
}

type groupKey struct {
	token string
	query string
}

// group is every subscription sharing one token and query on one
// collection: one read serves them all.
type group struct {
	collection string
	token      string
	query      Query

	mu      sync.Mutex
	subs    map[*Subscription]struct{}
	actions [3]int          // subscriptions wanting create, update, delete
	cached  []*Subscription // snapshot of subs, nil when stale
	known   keyMemory       // which keys the last reads showed or hid
}

func newGroup(collection, token string, q Query) *group {
	return &group{collection: collection, token: token, query: q, subs: map[*Subscription]struct{}{}}
}

func (g *group) add(s *Subscription) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.subs[s] = struct{}{}
	g.cached = nil
	for i, a := range []Action{ActionCreate, ActionUpdate, ActionDelete} {
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
	for i, a := range []Action{ActionCreate, ActionUpdate, ActionDelete} {
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
	switch a {
	case ActionCreate:
		return g.actions[0] > 0
	case ActionUpdate:
		return g.actions[1] > 0
	default:
		return g.actions[2] > 0
	}
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

func newIndex() *index {
	return &index{collections: map[string]map[groupKey]*group{}}
}

func (ix *index) add(s *Subscription) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.addLocked(s)
}

func (ix *index) addLocked(s *Subscription) {
	groups := ix.collections[s.Collection]
	if groups == nil {
		groups = map[groupKey]*group{}
		ix.collections[s.Collection] = groups
	}
	key := groupKey{token: s.Token(), query: s.queryKey}
	g := groups[key]
	if g == nil {
		g = newGroup(s.Collection, key.token, s.Query)
		groups[key] = g
	}
	g.add(s)
	s.group = g
	ix.count++
}

func (ix *index) remove(s *Subscription) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	return ix.removeLocked(s)
}

func (ix *index) removeLocked(s *Subscription) bool {
	g := s.group
	if g == nil {
		return false
	}
	s.group = nil
	ix.count--
	if g.remove(s) {
		groups := ix.collections[s.Collection]
		delete(groups, groupKey{token: g.token, query: s.queryKey})
		if len(groups) == 0 {
			delete(ix.collections, s.Collection)
		}
	}
	return true
}

// rebind moves s to the group of its new token.
func (ix *index) rebind(s *Subscription, token string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	attached := ix.removeLocked(s)
	s.token.Store(&token)
	if attached {
		ix.addLocked(s)
	}
}

func (ix *index) groups(collection string) []*group {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	groups := ix.collections[collection]
	if len(groups) == 0 {
		return nil
	}
	out := make([]*group, 0, len(groups))
	for _, g := range groups {
		out = append(out, g)
	}
	return out
}

func (ix *index) size() (subs, groups int) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, gs := range ix.collections {
		groups += len(gs)
	}
	return ix.count, groups
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

func (k *keyMemory) forget(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.hidden, key)
}
