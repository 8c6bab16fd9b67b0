package broker

import "sync"

// index maps collection → groups → subscriptions under one lock, so an event
// touches only the subscriptions of its own collection.
type index struct {
	mu          sync.RWMutex
	collections map[string]map[groupKey]*group
	count       int
	// ordered caches each collection's groups in fairOrder; a change of
	// the collection's subscriptions drops it.
	orderMu sync.Mutex
	ordered map[string][]*group
	// addrScoped tells the classes whose reads carry the members' address.
	addrScoped func(class string) bool
}

type groupKey struct {
	class string
	query string
}

func newIndex() *index {
	return &index{collections: map[string]map[groupKey]*group{}, ordered: map[string][]*group{}}
}

// add puts s into the group of class and its query.
func (ix *index) add(s *Subscription, class string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.addLocked(s, class)
}

func (ix *index) addLocked(s *Subscription, class string) {
	groups := ix.collections[s.Collection]
	if groups == nil {
		groups = map[groupKey]*group{}
		ix.collections[s.Collection] = groups
	}
	key := groupKey{class: class, query: s.queryKey}
	g := groups[key]
	if g == nil {
		g = newGroup(s.Collection, class, s.Query)
		if ix.addrScoped != nil && ix.addrScoped(class) {
			g.addr = s.Credentials().Addr
		}
		groups[key] = g
	}
	g.add(s)
	s.group = g
	ix.count++
	ix.changed(s.Collection)
}

// changed drops the cached order of collection (under ix.mu).
func (ix *index) changed(collection string) {
	ix.orderMu.Lock()
	delete(ix.ordered, collection)
	ix.orderMu.Unlock()
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
	ix.changed(s.Collection)
	if g.remove(s) {
		groups := ix.collections[s.Collection]
		delete(groups, groupKey{class: g.class, query: s.queryKey})
		if len(groups) == 0 {
			delete(ix.collections, s.Collection)
		}
	}
	return true
}

// move puts an attached s into the group of class (a no-op when it is
// there already, or detached).
func (ix *index) move(s *Subscription, class string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.moveLocked(s, class)
}

func (ix *index) moveLocked(s *Subscription, class string) {
	if s.group == nil || s.group.class == class {
		return
	}
	ix.removeLocked(s)
	ix.addLocked(s, class)
}

// find returns the group of collection for class and query key (nil when
// there is none).
func (ix *index) find(collection, class, query string) *group {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.collections[collection][groupKey{class: class, query: query}]
}

// groupOf returns the group s is attached to (nil when detached).
func (ix *index) groupOf(s *Subscription) *group {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return s.group
}

// groups returns the groups of collection in fairOrder; the slice is shared:
// it must not be changed.
func (ix *index) groups(collection string) []*group {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	ix.orderMu.Lock()
	cached, ok := ix.ordered[collection]
	ix.orderMu.Unlock()
	if ok {
		return cached
	}
	groups := ix.collections[collection]
	if len(groups) == 0 {
		return nil
	}
	out := make([]*group, 0, len(groups))
	for _, g := range groups {
		out = append(out, g)
	}
	out = fairOrder(out)
	ix.orderMu.Lock()
	ix.ordered[collection] = out
	ix.orderMu.Unlock()
	return out
}

// each calls fn for every attached subscription (under the read lock: fn
// must not change the index).
func (ix *index) each(fn func(s *Subscription)) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, groups := range ix.collections {
		for _, g := range groups {
			for _, s := range g.members() {
				fn(s)
			}
		}
	}
}

// regroup moves every attached subscription of the collections only
// accepts to the group of class(s) and returns how many moved.
func (ix *index) regroup(class func(*Subscription) string, only func(collection string) bool) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var subs []*Subscription
	for coll, groups := range ix.collections {
		if !only(coll) {
			continue
		}
		for _, g := range groups {
			subs = append(subs, g.members()...)
		}
	}
	moved := 0
	for _, s := range subs {
		if c := class(s); s.group != nil && s.group.class != c {
			ix.moveLocked(s, c)
			moved++
		}
	}
	return moved
}

func (ix *index) size() (subs, groups int) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	for _, gs := range ix.collections {
		groups += len(gs)
	}
	return ix.count, groups
}
