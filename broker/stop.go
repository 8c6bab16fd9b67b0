package broker

import (
	"context"
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
	byColl := map[string][]Event{}
	for _, e := range skipped {
		byColl[e.Collection] = append(byColl[e.Collection], e)
	}
	for coll, events := range byColl {
		for _, g := range b.index.groups(coll) {
			for _, s := range g.members() {
				if s.closed.Load() {
					continue
				}
				n := b.reportMissed(s, events)
				if n > 0 {
					told++
					missed += n
				}
			}
		}
	}
	b.metrics.EventsMissed.Add(int64(missed))
	return told, missed
}

// reportMissed tells s which of events (in order) it was not sent.
func (b *Broker) reportMissed(s *Subscription, events []Event) int {
	last := ""
	if p := s.lastSent.Load(); p != nil {
		last = *p
	}
	var ids []string
	n := 0
	for _, e := range events {
		if !s.Actions.Has(e.Action) || (last != "" && CompareIDs(e.ID, last) <= 0) {
			continue
		}
		n++
		if len(ids) < maxReportedIDs {
			ids = append(ids, e.ID)
		}
	}
	if n == 0 {
		return 0
	}
	s.Sink.Send(s.Encoder.Notice(s, Notice{Code: "EVENTS_MISSED", EventID: ids[0], Count: n, IDs: ids,
		Message: "the broker is shutting down: these events were not delivered; reconnect and resume with since (your last event id)"}))
	return n
}

// skip records events a stopping broker did not dispatch.
func (b *Broker) skip(events []Event) {
	b.skippedMu.Lock()
	b.skipped = append(b.skipped, events...)
	b.skippedMu.Unlock()
}
