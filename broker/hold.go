package broker

import (
	"sync"
	"sync/atomic"
	"time"
)

// holdQueue holds a subscription's live frames back while Subscribe sends
// its ack, replay and snapshot, so that live events follow them. It is
// bounded in bytes: frames beyond the bound are not kept, and the client is
// told how many events it missed and the id of the first one, so it can
// resume from there.
type holdQueue struct {
	on          atomic.Bool
	mu          sync.Mutex
	frames      []heldFrame
	bytes       int
	max         int
	budget      *heldBudget
	missed      int
	firstMissed string
}

// heldFrame is a live frame held back, with the action and keys of the
// event it carries (none for notices): a create of an item the snapshot
// holds is dropped, unless a delete of it came first.
type heldFrame struct {
	frame  []byte
	action Action
	keys   []string
}

// heldBudget is the bound on the bytes held by all hold queues together.
type heldBudget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes, or reports that they do not fit.
func (b *heldBudget) take(n int) bool {
	if b.used.Add(int64(n)) > b.max {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *heldBudget) give(n int) { b.used.Add(-int64(n)) }

// Held is the number of bytes of live frames held back now, across every
// subscription being set up.
func (b *Broker) Held() int64 { return b.held.used.Load() }

// start holds frames from now on, up to max bytes of its own and within
// budget.
func (h *holdQueue) start(max int, budget *heldBudget) {
	h.mu.Lock()
	h.max, h.budget = max, budget
	h.mu.Unlock()
	h.on.Store(true)
}

// deliver sends frame for the event *eventID now, or holds it while s is
// being set up; action and keys are the event's (empty for notices). The
// id is shared by every subscription the event is sent to: one pointer per
// event, not an allocation per subscriber.
func (s *Subscription) deliver(frame []byte, eventID *string, action Action, keys []string) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closed.Load() {
		return
	}
	if action != "" {
		s.lastSent.Store(eventID)
	}
	h := &s.held
	if h.on.Load() {
		h.mu.Lock()
		if h.on.Load() {
			if h.bytes+len(frame) <= h.max && h.budget.take(len(frame)) {
				h.frames = append(h.frames, heldFrame{frame: frame, action: action, keys: keys})
				h.bytes += len(frame)
			} else {
				if h.missed == 0 {
					h.firstMissed = *eventID
				}
				h.missed++
			}
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
	s.Sink.Send(frame)
}

// release sends the held frames in order (and a notice of those that did
// not fit), then delivers live. A held create of keys the snapshot holds
// is dropped: the snapshot already showed the item (its event was merely
// on its way through the Flow).
func (s *Subscription) release(snapshot *initKeys) {
	h := &s.held
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.frames {
		switch f.action {
		case ActionCreate:
			if snapshot.holdsAll(f.keys) {
				continue
			}
		case ActionDelete:
			snapshot.forget(f.keys)
		}
		s.Sink.Send(f.frame)
	}
	if h.missed > 0 {
		s.Sink.Send(s.Encoder.Notice(s, Notice{Code: "EVENTS_MISSED", EventID: h.firstMissed, Count: h.missed,
			Message: "events arriving while the subscription was being set up exceeded the send queue; resume from event_id"}))
	}
	h.budget.give(h.bytes)
	h.frames, h.bytes, h.missed, h.firstMissed = nil, 0, 0, ""
	h.on.Store(false)
}

// discard drops what is held (the subscription failed to attach).
func (h *holdQueue) discard() {
	h.mu.Lock()
	if h.budget != nil {
		h.budget.give(h.bytes)
	}
	h.frames, h.bytes, h.missed, h.firstMissed = nil, 0, 0, ""
	h.on.Store(false)
	h.mu.Unlock()
}

// initKeys are the keys of a subscription's snapshot: a create of one of
// them is a duplicate (an item is created once) until a delete of it is
// seen. Kept for initWindow after the snapshot (a create's event reaches
// the broker within moments of the write) and at most maxInitKeys keys.
type initKeys struct {
	mu    sync.Mutex
	keys  map[string]bool
	until time.Time
}

const (
	initWindow  = time.Minute
	maxInitKeys = 10000
)

func newInitKeys(keys []string) *initKeys {
	if len(keys) == 0 {
		return nil
	}
	k := &initKeys{keys: make(map[string]bool, min(len(keys), maxInitKeys)), until: time.Now().Add(initWindow)}
	for _, key := range keys {
		if len(k.keys) == maxInitKeys {
			break
		}
		k.keys[key] = true
	}
	return k
}

// holdsAll reports whether every one of keys is in the snapshot still.
func (k *initKeys) holdsAll(keys []string) bool {
	if k == nil || len(keys) == 0 {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Now().After(k.until) {
		k.keys = nil
		return false
	}
	for _, key := range keys {
		if !k.keys[key] {
			return false
		}
	}
	return true
}

// forget drops keys that were deleted: a later create of them is new.
func (k *initKeys) forget(keys []string) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, key := range keys {
		delete(k.keys, key)
	}
}
