package main

import (
	"sync/atomic"
	"time"
)

// tracker follows the events of one scenario: when each was sent, how many
// deliveries it expects, how many arrived and when the last one did. Events
// are identified by their item key (see frames.go); keys first..first+n-1
// map to a preallocated slice, so recording a receipt is a few atomics.
type tracker struct {
	base   time.Time
	first  int
	events []event
	// unknown counts frames with a key outside the tracker's range.
	unknown atomic.Int64
	// missed counts EVENTS_MISSED notices (a read failed in the broker).
	missed atomic.Int64
}

type event struct {
	sent atomic.Int64 // ns since base when sent (or scheduled); 0 = not sent
	want atomic.Int64 // deliveries expected
	got  atomic.Int64 // deliveries received
	last atomic.Int64 // latest receipt, ns since base
}

// newTracker makes a tracker for keys first..first+n-1. Times are taken
// from base with the monotonic clock.
func newTracker(first, n int) *tracker {
	return &tracker{base: time.Now(), first: first, events: make([]event, n)}
}

// sibling makes a tracker for the same keys and the same time base: two
// endpoints timed against the same sends (scenario 6).
func (t *tracker) sibling() *tracker {
	return &tracker{base: t.base, first: t.first, events: make([]event, len(t.events))}
}

// now is the monotonic time since base in ns.
func (t *tracker) now() int64 { return int64(time.Since(t.base)) }

// size is the number of keys the tracker holds.
func (t *tracker) size() int { return len(t.events) }

func (t *tracker) event(key int) *event {
	i := key - t.first
	if i < 0 || i >= len(t.events) {
		return nil
	}
	return &t.events[i]
}

// arm says how many deliveries key's event expects. Call it before sending.
func (t *tracker) arm(key int, want int) {
	t.event(key).want.Store(int64(want))
}

// markSent records the (scheduled) send time of key's event; latencies are
// measured from it. at is ns since base.
func (t *tracker) markSent(key int, at int64) {
	t.event(key).sent.Store(at)
}

// observe records one delivery of key received at now (ns since base) and
// returns its latency from the send time; ok is false for an unknown key or
// an event not marked sent.
func (t *tracker) observe(key int, now int64) (latency int64, ok bool) {
	e := t.event(key)
	if e == nil {
		t.unknown.Add(1)
		return 0, false
	}
	for {
		l := e.last.Load()
		if now <= l || e.last.CompareAndSwap(l, now) {
			break
		}
	}
	e.got.Add(1)
	sent := e.sent.Load()
	return now - sent, sent != 0
}

// wait blocks until key's event has all its deliveries or timeout passes,
// and returns the time from send to the last delivery received so far and
// whether all arrived. It polls: the latency comes from the receipt times
// the readers recorded, so the polling interval does not blur it.
func (t *tracker) wait(key int, timeout time.Duration) (time.Duration, bool) {
	e := t.event(key)
	deadline := time.Now().Add(timeout)
	complete := e.got.Load() >= e.want.Load()
	for !complete && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		complete = e.got.Load() >= e.want.Load()
	}
	last := e.last.Load()
	if last == 0 {
		return 0, false
	}
	return time.Duration(last - e.sent.Load()), complete
}

// waitRange waits until the events of keys [from, to) have all their
// deliveries or timeout passes, and reports whether they all arrived.
func (t *tracker) waitRange(from, to int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		want, got := t.counts(from, to)
		if got >= want {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// counts sums expected and received deliveries of keys [from, to).
func (t *tracker) counts(from, to int) (want, got int64) {
	for k := from; k < to; k++ {
		e := t.event(k)
		want += e.want.Load()
		got += e.got.Load()
	}
	return want, got
}
