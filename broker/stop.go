package broker

import (
	"context"
	"sort"
	"sync"
)

// maxReportedIDs bounds the event ids one shutdown notice lists (the count
// and the first id are always given).
const maxReportedIDs = 1000

// Stop ends delivery for a shutdown and tells every subscriber exactly
// which events it will not get. From the call on no event frame is queued
// (reads in flight are cancelled); once every worker has passed the events
// received so far (bounded by ctx), each subscription is sent one
// EVENTS_MISSED notice listing the events of its collection after the
// last one it was sent — the events still queued, and those of a batch cut
// short — so it can resume elsewhere with since. It returns how many
// subscriptions were told and how many subscriber-events that made.
func (b *Broker) Stop(ctx context.Context) (told, missed int) {
	b.stopping.Store(true)
	b.cancelReads()
	var wg sync.WaitGroup
	for _, sh := range b.shards {
		wg.Add(1)
		sh.queue.pushControl(sh.quiesced(wg.Done))
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	case <-b.done:
	}
	b.skippedMu.Lock()
	skipped := b.skipped
	b.skipped = nil
	b.skippedMu.Unlock()
	for coll, events := range missedByCollection(skipped) {
		r := reporter{events: events, frames: map[noticeKey][]byte{}}
		for _, g := range b.index.groups(coll) {
			for _, s := range g.members() {
				if s.closed.Load() {
					continue
				}
				if n := r.report(s); n > 0 {
					told++
					missed += n
				}
			}
		}
	}
	b.metrics.EventsMissed.Add(int64(missed))
	return told, missed
}

// missedEvent is a skipped event with its id parsed, for cheap ordering.
type missedEvent struct {
	Event
	ms, seq uint64
}

func (e missedEvent) after(ms, seq uint64) bool { return e.ms > ms || (e.ms == ms && e.seq > seq) }

// missedByCollection sorts the skipped events of each collection by id,
// each once (every group that skipped an event recorded it).
func missedByCollection(skipped []Event) map[string][]missedEvent {
	seen := map[string]bool{}
	out := map[string][]missedEvent{}
	for _, e := range skipped {
		if seen[e.ID] {
			continue
		}
		seen[e.ID] = true
		ms, seq := splitID(e.ID)
		out[e.Collection] = append(out[e.Collection], missedEvent{e, ms, seq})
	}
	for _, events := range out {
		sort.Slice(events, func(i, j int) bool { return events[j].after(events[i].ms, events[i].seq) })
	}
	return out
}

// reporter tells one collection's subscriptions which of its skipped
// events they miss. Thousands of subscriptions usually miss the same run:
// a notice is encoded once per (encoder, uid, first event, actions).
type reporter struct {
	events []missedEvent
	frames map[noticeKey][]byte
	counts map[noticeKey]int
}

type noticeKey struct {
	enc     Encoder
	uid     string
	start   int
	actions ActionSet
}

// report sends s its notice and returns how many events it lists.
func (r *reporter) report(s *Subscription) int {
	start := 0
	if p := s.lastSent.Load(); p != nil {
		ms, seq := splitID(*p)
		start = sort.Search(len(r.events), func(i int) bool { return r.events[i].after(ms, seq) })
	}
	if start == len(r.events) {
		return 0
	}
	k := noticeKey{s.Encoder, string(s.UID), start, s.Actions}
	if f, ok := r.frames[k]; ok {
		s.Sink.Send(f)
		return r.counts[k]
	}
	var ids []string
	n := 0
	for _, e := range r.events[start:] {
		if !s.Actions.Has(e.Action) {
			continue
		}
		n++
		if len(ids) < maxReportedIDs {
			ids = append(ids, e.ID)
		}
	}
	var f []byte
	if n > 0 {
		f = s.Encoder.Notice(s, Notice{Code: "EVENTS_MISSED", EventID: ids[0], Count: n, IDs: ids,
			Message: "the broker is shutting down: these events were not delivered; reconnect and resume with since (your last event id)"})
	}
	if r.counts == nil {
		r.counts = map[noticeKey]int{}
	}
	r.frames[k], r.counts[k] = f, n
	if n > 0 {
		s.Sink.Send(f)
	}
	return n
}

// skip records events a stopping broker did not dispatch.
func (b *Broker) skip(events []Event) {
	b.skippedMu.Lock()
	b.skipped = append(b.skipped, events...)
	b.skippedMu.Unlock()
}
