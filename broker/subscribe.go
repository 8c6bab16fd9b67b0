package broker

import (
	"context"
	"encoding/json"
	"fmt"
)

// AttachOptions say what a new subscription receives before live events.
type AttachOptions struct {
	// Since replays the kept events after this ID first.
	Since string
	// Snapshot, when set, reads the items the subscription starts from (its
	// Init frame). It runs after the subscription is attached, so every
	// event is either reflected in it or delivered after it.
	Snapshot func(ctx context.Context) (Snapshot, error)
}

// Snapshot is what a subscription starts from.
type Snapshot struct {
	Data json.RawMessage
	// Keys of the items in Data (nil when unknown): a create of one of
	// them that arrives after the snapshot is a duplicate and is dropped,
	// until a delete of it is seen.
	Keys []string
}

// Subscribe attaches s and sends, in this order: the ack, the events after
// opts.Since that s missed (read with its token now), the snapshot, then
// live events, with none skipped between them.
//
// s is attached first, on its collection's worker, with its live frames
// held back; the replay and the snapshot are read next, on the caller's
// goroutine (a reconnect storm never delays other events); only when both
// succeeded is the ack sent and the held frames released. On any error s is
// detached again and nothing was sent: the client was never told it is
// subscribed.
func (b *Broker) Subscribe(ctx context.Context, s *Subscription, opts AttachOptions) error {
	s.held.start(b.opts.MaxHeldBytes, &b.held)
	var boundary string
	err := b.onWorker(ctx, s.Collection, func(sh *shard) {
		// Events up to what this worker dispatched, or up to the bus's
		// horizon (events from before this instance started, which never
		// come live), can only be replayed; later ones reach s live.
		boundary = sh.last[s.Collection]
		if h := b.bus.Horizon(); CompareIDs(h, boundary) > 0 {
			boundary = h
		}
		if !s.closed.Load() {
			since := b.doubts.classifying()
			class := b.classOf(s)
			// Joining a group whose pipeline still delivers events up to
			// the boundary would send s some of them twice (live and in
			// the replay) or before its snapshot: let it finish.
			if g := b.index.find(s.Collection, class, s.queryKey); g != nil {
				g.pipe.waitIdle()
			}
			b.index.add(s, class)
			b.classified(s, since) // an access change pending elsewhere classifies it again
		}
	})
	if err != nil {
		s.held.discard()
		return err
	}
	fail := func(err error) error {
		b.Unsubscribe(s)
		return err
	}
	var replayed [][]byte
	if opts.Since != "" {
		if replayed, err = b.replay(ctx, s, opts.Since, boundary); err != nil {
			return fail(err)
		}
	}
	var snapshot Snapshot
	if opts.Snapshot != nil {
		if snapshot, err = opts.Snapshot(ctx); err != nil {
			return fail(err)
		}
	}
	if ack := s.Encoder.Ack(s, opts.Snapshot != nil); ack != nil {
		s.Sink.Send(ack)
	}
	for _, f := range replayed {
		s.Sink.Send(f)
	}
	keys := newInitKeys(snapshot.Keys)
	if opts.Snapshot != nil {
		s.Sink.Send(s.Encoder.Init(s, snapshot.Data))
		s.snapshot.Store(keys)
	}
	s.release(keys)
	return nil
}

// replay returns the frames of the kept events after since, up to boundary
// (later ones reach s live), read now with s's own token. Deletes follow
// the rule of s's live group: its memory of hidden keys is shared.
func (b *Broker) replay(ctx context.Context, s *Subscription, since, boundary string) ([][]byte, error) {
	events, gap, err := b.bus.History(ctx, s.Collection, since)
	if err != nil {
		return nil, fmt.Errorf("%w: history of %s: %w", ErrBusUnavailable, s.Collection, err)
	}
	var out collector
	if gap {
		b.metrics.HistoryGaps.Add(1)
		out.Send(s.Encoder.Notice(s, Notice{Code: "HISTORY_GAP", EventID: since,
			Message: "events after this id are no longer kept; refetch the collection"}))
	}
	var missed []Event
	for _, e := range events {
		if boundary == "" || CompareIDs(e.ID, boundary) > 0 {
			break
		}
		if s.Actions.Has(e.Action) {
			missed = append(missed, e)
		}
	}
	if len(missed) == 0 {
		return out.frames, nil
	}
	live := b.index.groupOf(s)
	if live == nil {
		return nil, ErrDetached // detached meanwhile (the connection closed)
	}
	// A stand-in that collects instead of sending, alone in a group that
	// reads with s's own token.
	stand := NewSubscription(s.Collection, s.Credentials(), s.Query, s.Actions, s.UID, &out, s.Encoder)
	solo := newGroup(s.Collection, live.class, s.Query)
	solo.known = live.known
	solo.shareReads = true
	solo.add(stand)
	if err := b.deliver(ctx, solo, missed, nil); err != nil {
		return nil, err
	}
	return out.frames, nil
}

// collector is a Sink that keeps frames.
type collector struct{ frames [][]byte }

func (c *collector) Send(f []byte) {
	if len(f) > 0 {
		c.frames = append(c.frames, f)
	}
}

func (c *collector) TokenExpired(string) {}
