package broker

import (
	"context"
	"sync"
	"time"
)

// fairSem is a counting semaphore shared by owners (a token's reads). It
// keeps one owner's many reads from costing the others:
//
//   - waiters are served round robin by owner;
//   - an owner holds at most one slot in 32 (one of the default 32): its
//     reads run one after another;
//   - an owner that still has reads waiting when it gives a slot back, while
//     others have read in the last second, rests as long as it held the slot
//     before it may take another: at Directus, its reads then take at most
//     half the time, and another owner's read finds one of them in flight
//     at most half as often.
//
// An owner alone is never slowed down.
type fairSem struct {
	mu     sync.Mutex
	free   int
	cap    int // slots one owner may hold
	held   map[any]int
	queues map[any][]chan struct{}
	order  []any // owners with waiters, in turn order
	// rest is when a resting owner may take a slot again; seen is when
	// each owner last took one (kept for activeWindow).
	rest map[any]time.Time
	seen map[any]time.Time
	now  func() time.Time
}

// activeWindow is how recently another owner must have read for a
// backlogged owner to rest.
const activeWindow = time.Second

func newFairSem(n int) *fairSem {
	return &fairSem{free: n, cap: max(1, n/32), held: map[any]int{}, queues: map[any][]chan struct{}{},
		rest: map[any]time.Time{}, seen: map[any]time.Time{}, now: time.Now}
}

// acquire takes a slot for owner, waiting its turn; it fails only when ctx
// ends first.
func (s *fairSem) acquire(ctx context.Context, owner any) error {
	s.mu.Lock()
	now := s.now()
	if s.free > 0 && len(s.queues[owner]) == 0 && s.eligibleLocked(owner, now) && !s.othersWaitLocked(now) {
		s.takeLocked(owner, now)
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
	s.release(owner, 0)
	return ctx.Err()
}

func (s *fairSem) eligibleLocked(owner any, now time.Time) bool {
	return s.held[owner] < s.cap && !now.Before(s.rest[owner])
}

func (s *fairSem) takeLocked(owner any, now time.Time) {
	s.free--
	s.held[owner]++
	s.seen[owner] = now
	delete(s.rest, owner)
}

// othersWaitLocked reports whether an owner that may take a slot waits.
func (s *fairSem) othersWaitLocked(now time.Time) bool {
	for _, o := range s.order {
		if s.eligibleLocked(o, now) {
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

// release gives owner's slot back, which it held for d, to the next owner
// in turn that may take one.
func (s *fairSem) release(owner any, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[owner]--; s.held[owner] <= 0 {
		delete(s.held, owner)
	}
	s.free++
	now := s.now()
	if d > 0 && len(s.queues[owner]) > 0 && s.othersActiveLocked(owner, now) {
		s.rest[owner] = now.Add(d)
		time.AfterFunc(d, func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.grantLocked()
		})
	}
	s.grantLocked()
}

// othersActiveLocked reports whether an owner other than owner took a slot
// within activeWindow (and forgets those that did not).
func (s *fairSem) othersActiveLocked(owner any, now time.Time) bool {
	active := false
	for o, t := range s.seen {
		switch {
		case now.Sub(t) > activeWindow && s.held[o] == 0:
			delete(s.seen, o)
		case o != owner:
			active = true
		}
	}
	return active
}

// grantLocked hands free slots to waiting owners in turn.
func (s *fairSem) grantLocked() {
	now := s.now()
	for s.free > 0 {
		i := -1
		for j, o := range s.order {
			if s.eligibleLocked(o, now) {
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
		s.takeLocked(owner, now)
		close(ch)
	}
}
