package broker

import "sort"

// Each group costs one Directus read per event, and a collection's next
// batch waits until every group's read of this one is done. Reads start in
// the order of fairOrder, through read_concurrency slots: a group one of
// whose members holds few groups of the collection starts before groups
// whose members all hold many. So one client with many distinct queries
// (bounded per user, but still many reads) makes its own reads wait, not
// everyone else's.

// owner is who a subscription's reads are counted against: its token, or
// its connection when it has none (the public role is not one client).
func (s *Subscription) owner() any {
	if t := s.Token(); t != "" {
		return t
	}
	return s.Sink
}

// fairOrder sorts groups by the fewest groups any of their members' owners
// holds among them, then by size (more subscribers first).
func fairOrder(groups []*group) []*group {
	if len(groups) < 2 {
		return groups
	}
	held := map[any]int{}
	members := make([][]*Subscription, len(groups))
	for i, g := range groups {
		members[i] = g.members()
		seen := map[any]bool{}
		for _, s := range members[i] {
			if o := s.owner(); !seen[o] {
				seen[o] = true
				held[o]++
			}
		}
	}
	type ranked struct {
		g          *group
		weight, in int
	}
	rs := make([]ranked, len(groups))
	for i, g := range groups {
		w := len(groups) + 1
		for _, s := range members[i] {
			w = min(w, held[s.owner()])
		}
		rs[i] = ranked{g, w, len(members[i])}
	}
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].weight != rs[j].weight {
			return rs[i].weight < rs[j].weight
		}
		return rs[i].in > rs[j].in
	})
	out := make([]*group, len(rs))
	for i, r := range rs {
		out[i] = r.g
	}
	return out
}
