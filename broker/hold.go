package broker

import (
	"sync"
	"sync/atomic"
)

// holdQueue holds a subscription's live frames back while Subscribe sends
// its ack, replay and snapshot, so that live events follow them. It is
// bounded in bytes: frames beyond the bound are not kept, and the client is
// told how many events it missed and the id of the first one, so it can
// resume from there.
type holdQueue struct {
	on          atomic.Bool
	mu          sync.Mutex
	frames      [][]byte
	bytes       int
	max         int
	missed      int
	firstMissed string
}

// start holds frames from now on, up to max bytes.
func (h *holdQueue) start(max int) {
	h.mu.Lock()
	h.max = max
	h.mu.Unlock()
	h.on.Store(true)
}

// deliver sends frame for event id now, or holds it while s is being set up.
func (s *Subscription) deliver(frame []byte, eventID string) {
	h := &s.held
	if h.on.Load() {
		h.mu.Lock()
		if h.on.Load() {
			if h.bytes+len(frame) <= h.max {
				h.frames = append(h.frames, frame)
				h.bytes += len(frame)
			} else {
				if h.missed == 0 {
					h.firstMissed = eventID
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
// not fit), then delivers live.
func (s *Subscription) release() {
	h := &s.held
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range h.frames {
		s.Sink.Send(f)
	}
	if h.missed > 0 {
		s.Sink.Send(s.Encoder.Notice(s, Notice{Code: "EVENTS_MISSED", EventID: h.firstMissed, Count: h.missed,
			Message: "events arriving while the subscription was being set up exceeded the send queue; resume from event_id"}))
	}
	h.frames, h.bytes, h.missed, h.firstMissed = nil, 0, 0, ""
	h.on.Store(false)
}

// discard drops what is held (the subscription failed to attach).
func (h *holdQueue) discard() {
	h.mu.Lock()
	h.frames, h.bytes, h.missed, h.firstMissed = nil, 0, 0, ""
	h.on.Store(false)
	h.mu.Unlock()
}
