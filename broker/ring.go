package broker

import "time"

type stamped struct {
	at    time.Time
	event Event
}

// ring is a collection's kept history, oldest first: a fixed-size circular
// buffer, so a push once full overwrites the oldest entry instead of copying
// the history.
type ring struct {
	items       []stamped
	start, n    int
	lastDropped string // ID of the newest event no longer kept
}

func newRing(size int) *ring {
	if size < 1 {
		size = 1
	}
	return &ring{items: make([]stamped, size)}
}

func (r *ring) at(i int) *stamped { return &r.items[(r.start+i)%len(r.items)] }

func (r *ring) push(s stamped) {
	if r.n == len(r.items) {
		r.lastDropped = r.at(0).event.ID
		*r.at(0) = s
		r.start = (r.start + 1) % len(r.items)
		return
	}
	*r.at(r.n) = s
	r.n++
}

// expire drops the entries older than before.
func (r *ring) expire(before time.Time) {
	for r.n > 0 && r.at(0).at.Before(before) {
		r.lastDropped = r.at(0).event.ID
		*r.at(0) = stamped{}
		r.start = (r.start + 1) % len(r.items)
		r.n--
	}
}

// after returns the kept events with an ID above since ("" = all), oldest
// first.
func (r *ring) after(since string) []Event {
	if r == nil {
		return nil
	}
	var out []Event
	for i := range r.n {
		if e := r.at(i).event; since == "" || CompareIDs(e.ID, since) > 0 {
			out = append(out, e)
		}
	}
	return out
}
