package broker

import (
	"context"
	"sync"
)

// fairSem is a counting semaphore shared by owners: waiters are served
// round robin by owner, and an owner holds at most one slot in 32 (one of
// the default 32). So whoever waits with many requests is served once per
// turn like everyone else, and one client's many reads (or hung ones) can
// neither queue ahead of another client's one nor take many slots: at
// Directus, another client's read waits behind at most one of its reads.
type fairSem struct {
	mu     sync.Mutex
	free   int
	cap    int // slots one owner may hold
	held   map[any]int
	queues map[any][]chan struct{}
	order  []any // owners with waiters, in turn order
}

func newFairSem(n int) *fairSem {
	return &fairSem{free: n, cap: max(1, n/32), held: map[any]int{}, queues: map[any][]chan struct{}{}}
}

// acquire takes a slot for owner, waiting its turn; it fails only when ctx
// ends first.
func (s *fairSem) acquire(ctx context.Context, owner any) error {
	s.mu.Lock()
	if s.free > 0 && len(s.queues[owner]) == 0 && s.held[owner] < s.cap && !s.othersWaitLocked() {
		s.free--
		s.held[owner]++
		s.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	if len(s.queues[owner]) == 0 {
		s.order = append(s.order, owner)
	}
	s.queues[owner] = append(s.queues[owner], ch)
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	q := s.queues[owner]
	for i, c := range q {
		if c == ch {
			s.queues[owner] = append(q[:i:i], q[i+1:]...)
			if len(s.queues[owner]) == 0 {
				s.dropOwnerLocked(owner)
			}
			s.mu.Unlock()
			return ctx.Err()
		}
	}
	s.mu.Unlock()
	// Granted meanwhile: give the slot on.
	s.release(owner)
	return ctx.Err()
}

// othersWaitLocked reports whether an owner that may take a slot waits.
func (s *fairSem) othersWaitLocked() bool {
	for _, o := range s.order {
		if s.held[o] < s.cap {
			return true
		}
	}
	return false
}

func (s *fairSem) dropOwnerLocked(owner any) {
	delete(s.queues, owner)
	for i, o := range s.order {
		if o == owner {
			s.order = append(s.order[:i:i], s.order[i+1:]...)
			return
		}
	}
}

// release gives owner's slot back, to the next owner in turn that may
// take one, if any waits.
func (s *fairSem) release(owner any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[owner]--; s.held[owner] <= 0 {
		delete(s.held, owner)
	}
	s.free++
	s.grantLocked()
}

// grantLocked hands free slots to waiting owners in turn.
func (s *fairSem) grantLocked() {
	for s.free > 0 {
		i := -1
		for j, o := range s.order {
			if s.held[o] < s.cap {
				i = j
				break
			}
		}
		if i < 0 {
			return
		}
		owner := s.order[i]
		q := s.queues[owner]
		ch := q[0]
		s.order = append(s.order[:i:i], s.order[i+1:]...)
		if len(q) > 1 {
			s.queues[owner] = q[1:]
			s.order = append(s.order, owner) // its next waiter, after the others
		} else {
			delete(s.queues, owner)
		}
		s.free--
		s.held[owner]++
		close(ch)
	}
}
