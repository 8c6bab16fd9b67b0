package broker

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
)

// maxBatch bounds how many queued events one dispatch round takes.
const maxBatch = 256

// task is one unit of a shard's queue: an event to dispatch, or work
// (attach, drain barrier) that must run between events.
type task struct {
	event Event
	fn    func()
}

// work runs a shard. Events already queued are dispatched together: each
// group then reads the keys of the whole batch at once. A burst (an import
// fires one POST per row) thus costs a few reads per group instead of one
// per event, and an idle broker adds no delay waiting for a batch to fill.
func (b *Broker) work(sh *shard) {
	defer b.wg.Done()
	batch := make([]Event, 0, maxBatch)
	for {
		var t task
		select {
		case t = <-sh.tasks:
		case <-b.done:
			return
		}
		if t.fn != nil {
			t.fn()
			continue
		}
		batch = append(batch[:0], t.event)
		var next *task
	drain:
		for len(batch) < maxBatch {
			select {
			case t2 := <-sh.tasks:
				if t2.fn != nil {
					next = &t2
					break drain
				}
				batch = append(batch, t2.event)
			default:
				break drain
			}
		}
		b.dispatchBatch(sh, batch)
		if next != nil {
			next.fn()
		}
	}
}

// dispatchBatch fans out events (in publish order) collection by
// collection; each collection's events keep their order for every group.
func (b *Broker) dispatchBatch(sh *shard, events []Event) {
	for len(events) > 0 {
		coll := events[0].Collection
		same, rest := events[:0:0], events[:0:0]
		for _, e := range events {
			if e.Collection == coll {
				same = append(same, e)
			} else {
				rest = append(rest, e)
			}
		}
		b.dispatchCollection(sh, coll, same)
		events = rest
	}
}

// dispatchCollection delivers one collection's events to its groups; reads
// for different groups run concurrently, and the next batch waits for all.
func (b *Broker) dispatchCollection(sh *shard, coll string, events []Event) {
	sh.last[coll] = events[len(events)-1].ID
	b.metrics.EventsDispatched.Add(int64(len(events)))
	groups := b.index.groups(coll)
	ctx := context.Background()
	if len(groups) == 1 {
		b.deliver(ctx, groups[0], events)
		return
	}
	var wg sync.WaitGroup
	for _, g := range groups {
		b.readSem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-b.readSem; wg.Done() }()
			b.deliver(ctx, g, events)
		}()
	}
	wg.Wait()
}

// deliver reads the keys of events once for g, then sends each event, in
// order, to g's subscriptions as g may see it.
func (b *Broker) deliver(ctx context.Context, g *group, events []Event) {
	var keys []string
	seen := map[string]bool{}
	// Keys deleted within the batch read as missing; that must not count as
	// "this group could not see it", or the delete itself would be withheld.
	var deleted map[string]bool
	for _, e := range events {
		if e.Action == ActionDelete {
			if deleted == nil {
				deleted = map[string]bool{}
			}
			for _, k := range e.Keys {
				deleted[k] = true
			}
			continue
		}
		if !g.wants(e.Action) {
			continue
		}
		for _, k := range e.Keys {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	var (
		items map[string]json.RawMessage
		err   error
	)
	if len(keys) > 0 {
		b.metrics.Reads.Add(1)
		rctx, cancel := context.WithTimeout(ctx, b.opts.ReadTimeout)
		items, err = b.reader.ReadItems(rctx, g.token, g.collection, keys, g.query)
		cancel()
		if err != nil {
			b.metrics.ReadErrors.Add(1)
		}
	}
	for _, e := range events {
		if !g.wants(e.Action) {
			continue
		}
		if e.Action != ActionDelete && err != nil {
			b.readFailed(g, e, err)
			continue
		}
		if d, ok := view(g, e, items, deleted); ok {
			b.send(g, e.Action, d)
		}
	}
}

// send encodes d once per distinct (encoder, uid) and queues it for every
// subscription of g that wants action.
func (b *Broker) send(g *group, action Action, d *Delivery) {
	type frameKey struct {
		enc Encoder
		uid string
	}
	var (
		lastKey   frameKey
		lastFrame []byte
		frames    map[frameKey][]byte
		sent      int64
	)
	for _, s := range g.members() {
		if !s.Actions.Has(action) || s.closed.Load() {
			continue
		}
		k := frameKey{s.Encoder, string(s.UID)}
		frame := lastFrame
		if lastFrame == nil || k != lastKey {
			if frames == nil {
				frames = map[frameKey][]byte{}
			}
			if frame = frames[k]; frame == nil {
				frame = s.Encoder.Event(d, s.UID)
				frames[k] = frame
			}
			lastKey, lastFrame = k, frame
		}
		s.deliver(frame)
		sent++
	}
	b.metrics.FramesSent.Add(sent)
}

// view is e as g may see it, given what g's read returned; ok is false
// when g sees nothing of it.
func view(g *group, e Event, items map[string]json.RawMessage, deleted map[string]bool) (*Delivery, bool) {
	d := &Delivery{Event: e}
	if e.Action == ActionDelete {
		for _, k := range e.Keys {
			if !g.known.isHidden(k) {
				d.Keys = append(d.Keys, k)
			}
			g.known.forget(k)
		}
		if len(d.Keys) == 0 {
			return nil, false
		}
		d.Payload, _ = json.Marshal(d.Keys)
		d.Data = d.Payload
		return d, true
	}
	data := make([]json.RawMessage, 0, len(e.Keys))
	for _, k := range e.Keys {
		item, visible := items[k]
		if visible || !deleted[k] {
			g.known.record(k, visible)
		}
		if visible {
			d.Keys = append(d.Keys, k)
			data = append(data, item)
		}
	}
	if len(data) == 0 {
		return nil, false
	}
	d.Data = jsonArray(data)
	d.Payload = restrictPayload(e, data)
	return d, true
}

// restrictPayload keeps only what the group read: for create the item itself
// (an array for several keys), for update the changed fields with the values
// the group's read returned.
func restrictPayload(e Event, data []json.RawMessage) json.RawMessage {
	if e.Action == ActionCreate {
		if len(data) == 1 {
			return data[0]
		}
		return jsonArray(data)
	}
	var changed map[string]json.RawMessage
	_ = json.Unmarshal(e.Payload, &changed)
	var item map[string]json.RawMessage
	_ = json.Unmarshal(data[0], &item)
	kept := make(map[string]json.RawMessage, len(changed))
	for field := range changed {
		if v, ok := item[field]; ok {
			kept[field] = v
		}
	}
	out, _ := json.Marshal(kept)
	return out
}

// readFailed tells g's subscribers they missed e: nothing unfiltered is ever
// sent in place of a failed read.
func (b *Broker) readFailed(g *group, e Event, err error) {
	members := g.members()
	b.metrics.EventsMissed.Add(int64(len(members)))
	expired := errors.Is(err, ErrTokenExpired)
	b.log.Warn().Err(err).Str("collection", e.Collection).Str("event", e.ID).
		Int("subscribers", len(members)).Bool("token_expired", expired).Msg("read for delivery failed; subscribers told they missed the event")
	n := Notice{Code: "EVENTS_MISSED", EventID: e.ID, Count: 1, Message: "an event could not be read from Directus with your token and was not delivered"}
	if expired {
		n.Message = "an event was not delivered because your token expired"
	}
	for _, s := range members {
		if s.closed.Load() || !s.Actions.Has(e.Action) {
			continue
		}
		s.deliver(s.Encoder.Notice(s, n))
		if expired {
			s.Sink.TokenExpired(g.token)
		}
	}
}

// jsonArray joins items (valid JSON read from Directus) into an array
// without re-validating them, as json.Marshal would.
func jsonArray(items []json.RawMessage) json.RawMessage {
	n := 2
	for _, it := range items {
		n += len(it) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, it := range items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, it...)
	}
	return append(out, ']')
}
