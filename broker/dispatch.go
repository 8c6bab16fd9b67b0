package broker

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
)

// dispatch fans e out to the groups of its collection. It runs on the
// collection's worker; reads for different groups run concurrently, and the
// next event of the collection waits until all of them are done.
func (b *Broker) dispatch(sh *shard, e Event) {
	sh.last[e.Collection] = e.ID
	b.metrics.EventsDispatched.Add(1)
	groups := b.index.groups(e.Collection)
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, g := range groups {
		if !g.wants(e.Action) {
			continue
		}
		if len(groups) == 1 {
			b.deliver(ctx, g, e)
			break
		}
		b.readSem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-b.readSem; wg.Done() }()
			b.deliver(ctx, g, e)
		}()
	}
	wg.Wait()
}

// deliver reads e's items once for g and sends the resulting frame to each
// of g's subscriptions, encoding each distinct frame once.
func (b *Broker) deliver(ctx context.Context, g *group, e Event) {
	d, ok := b.view(ctx, g, e)
	if !ok {
		return
	}
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
		if !s.Actions.Has(e.Action) || s.closed.Load() {
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
		s.Sink.Send(frame)
		sent++
	}
	b.metrics.FramesSent.Add(sent)
}

// view is e as g may see it; ok is false when g sees nothing of it.
func (b *Broker) view(ctx context.Context, g *group, e Event) (*Delivery, bool) {
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
	b.metrics.Reads.Add(1)
	rctx, cancel := context.WithTimeout(ctx, b.opts.ReadTimeout)
	items, err := b.reader.ReadItems(rctx, g.token, e.Collection, e.Keys, g.query)
	cancel()
	if err != nil {
		b.readFailed(g, e, err)
		return nil, false
	}
	data := make([]json.RawMessage, 0, len(items))
	for _, k := range e.Keys {
		item, visible := items[k]
		g.known.record(k, visible)
		if visible {
			d.Keys = append(d.Keys, k)
			data = append(data, item)
		}
	}
	if len(data) == 0 {
		return nil, false
	}
	d.Data, _ = json.Marshal(data)
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
		out, _ := json.Marshal(data)
		return out
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
	b.metrics.ReadErrors.Add(1)
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
		if s.closed.Load() {
			continue
		}
		s.Sink.Send(s.Encoder.Notice(s, n))
		if expired {
			s.Sink.TokenExpired()
		}
	}
}
