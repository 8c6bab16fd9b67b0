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

	// mu serializes publishers, so dispatch order equals ID order, and
	// guards the state below. Publish never waits while holding it: a full
	// dispatch queue is refused at once (ErrQueueFull), so one hot
	// collection cannot stall the others.
	mu      sync.Mutex
	seq     uint64
	d       Dispatcher
	history map[string]*ring
}

// NewMemoryBus keeps up to maxLen events per collection, none older than maxAge.
func NewMemoryBus(maxLen int, maxAge time.Duration) *MemoryBus {
	now := time.Now
	return &MemoryBus{maxLen: maxLen, maxAge: maxAge, now: now, epoch: uint64(now().UnixMilli()), history: map[string]*ring{}}
}

// Start implements Bus.
func (b *MemoryBus) Start(d Dispatcher) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.d = d
	return nil
}

// Publish implements Bus.
func (b *MemoryBus) Publish(ctx context.Context, events []Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("memory bus: %w: %w", ErrBusUnavailable, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.d == nil {
		return fmt.Errorf("memory bus: %w: not started", ErrBusUnavailable)
	}
	for i := range events {
		events[i].ID = fmt.Sprintf("%d-%d", b.epoch, b.seq+uint64(i)+1)
	}
	if err := b.d.TryDispatch(events); err != nil {
		for i := range events {
			events[i].ID = ""
		}
		return fmt.Errorf("memory bus: %w", err)
	}
	b.seq += uint64(len(events))
	now := b.now()
	for _, e := range events {
		r := b.history[e.Collection]
		if r == nil {
			r = newRing(b.maxLen)
			b.history[e.Collection] = r
		}
		r.push(stamped{at: now, event: e})
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
		return r.after(""), true, nil
	}
	if r == nil {
		return nil, false, nil
	}
	// Events after since were lost when the newest dropped one is after it.
	gap := r.lastDropped != "" && CompareIDs(r.lastDropped, since) > 0
	return r.after(since), gap, nil
}

// Horizon implements Bus: a memory bus sees every event of its process.
func (b *MemoryBus) Horizon() string { return "" }

// Ready implements Bus.
func (b *MemoryBus) Ready(context.Context) error { return nil }

// Close implements Bus.
func (b *MemoryBus) Close() error { return nil }
