package broker

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// MemoryBus is the single-process bus: events go straight to the local
// fan-out. IDs are "<start ms>-<seq>", so IDs from an earlier process never
// match and a resume across a restart reports a gap instead of skipping.
type MemoryBus struct {
	maxLen int
	maxAge time.Duration
	now    func() time.Time
	epoch  uint64

	// publishMu serializes publishers so delivery order equals ID order;
	// mu guards the state below and is never held while handle runs, so a
	// dispatch worker reading History can never wait on a publisher that
	// waits on that worker's queue.
	publishMu sync.Mutex
	mu        sync.Mutex
	seq       uint64
	handle    func(Event)
	history   map[string]*ring
}

// NewMemoryBus keeps up to maxLen events per collection, none older than maxAge.
func NewMemoryBus(maxLen int, maxAge time.Duration) *MemoryBus {
	now := time.Now
	return &MemoryBus{maxLen: maxLen, maxAge: maxAge, now: now, epoch: uint64(now().UnixMilli()), history: map[string]*ring{}}
}

// Start implements Bus.
func (b *MemoryBus) Start(handle func(Event)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.handle = handle
	return nil
}

// Publish implements Bus.
func (b *MemoryBus) Publish(_ context.Context, events []Event) error {
	b.publishMu.Lock()
	defer b.publishMu.Unlock()
	b.mu.Lock()
	handle := b.handle
	if handle == nil {
		b.mu.Unlock()
		return fmt.Errorf("memory bus: %w: not started", ErrBusUnavailable)
	}
	now := b.now()
	for i := range events {
		b.seq++
		events[i].ID = fmt.Sprintf("%d-%d", b.epoch, b.seq)
		r := b.history[events[i].Collection]
		if r == nil {
			r = &ring{}
			b.history[events[i].Collection] = r
		}
		r.push(stamped{at: now, event: events[i]}, b.maxLen)
	}
	b.mu.Unlock()
	for _, e := range events {
		handle(e)
	}
	return nil
}

// History implements Bus.
func (b *MemoryBus) History(_ context.Context, collection, since string) ([]Event, bool, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.history[collection]
	if r != nil {
		r.expire(b.now().Add(-b.maxAge))
	}
	if ms, _ := splitID(since); !ValidID(since) || ms != b.epoch {
		// Not an ID of this process: anything may have happened since.
		return r.all(), true, nil
	}
	if r == nil {
		return nil, false, nil
	}
	var out []Event
	for _, it := range r.items {
		if CompareIDs(it.event.ID, since) > 0 {
			out = append(out, it.event)
		}
	}
	// Events after since were lost when the newest dropped one is after it.
	gap := r.lastDropped != "" && CompareIDs(r.lastDropped, since) > 0
	return out, gap, nil
}

// Horizon implements Bus: a memory bus sees every event of its process.
func (b *MemoryBus) Horizon() string { return "" }

// Ready implements Bus.
func (b *MemoryBus) Ready(context.Context) error { return nil }

// Close implements Bus.
func (b *MemoryBus) Close() error { return nil }

type stamped struct {
	at    time.Time
	event Event
}

// ring is a collection's kept history, oldest first.
type ring struct {
	items       []stamped
	lastDropped string // ID of the newest event no longer kept
}

func (r *ring) push(s stamped, max int) {
	r.items = append(r.items, s)
	if over := len(r.items) - max; over > 0 {
		r.drop(over)
	}
}

func (r *ring) expire(before time.Time) {
	n := 0
	for n < len(r.items) && r.items[n].at.Before(before) {
		n++
	}
	r.drop(n)
}

func (r *ring) drop(n int) {
	if n == 0 {
		return
	}
	r.lastDropped = r.items[n-1].event.ID
	r.items = append(r.items[:0:0], r.items[n:]...)
}

func (r *ring) all() []Event {
	if r == nil {
		return nil
	}
	out := make([]Event, len(r.items))
	for i, it := range r.items {
		out[i] = it.event
	}
	return out
}
