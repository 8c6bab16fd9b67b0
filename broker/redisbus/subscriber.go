package redisbus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// subscriber is a Bus's one pub/sub subscriber: it receives every event published
// anywhere through the pub/sub channel and hands it to the broker in ID
// order, exactly once. After any break of the subscription it resubscribes
// with backoff and, once subscribed, reads what it missed from the events
// stream. Only its goroutine touches its fields.
type subscriber struct {
	bus  *Bus
	d    broker.Dispatcher
	gen  string // the data generation last is from; "" before the first subscription
	last string // ID of the newest event handed on
}

const (
	minBackoff  = 50 * time.Millisecond
	maxBackoff  = 2 * time.Second
	catchUpPage = 512
)

func (r *subscriber) run(ctx context.Context) {
	b := r.bus
	defer close(b.done)
	backoff := minBackoff
	var down time.Time
	for {
		wasLive, err := r.session(ctx)
		b.live.Store(false)
		if ctx.Err() != nil {
			return
		}
		if wasLive {
			backoff = minBackoff
			down = time.Time{}
		}
		if down.IsZero() {
			down = time.Now()
			b.log.Warn().Err(err).Msg("redis subscription lost; events from other instances are held back until it is restored")
		} else {
			b.log.Debug().Err(err).Dur("down", time.Since(down)).Msg("redis still unreachable")
		}
		// Full jitter keeps instances from reconnecting in lockstep.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session subscribes, catches up and then hands on what arrives until the
// subscription breaks. wasLive reports whether it got that far.
func (r *subscriber) session(ctx context.Context) (wasLive bool, err error) {
	b := r.bus
	ps := b.client.Subscribe(ctx)
	if !b.setPubSub(ps) {
		return false, context.Canceled
	}
	defer ps.Close()
	if err := ps.Subscribe(ctx, b.channel); err != nil {
		return false, fmt.Errorf("subscribe: %w", err)
	}
	// Everything published after the confirmation arrives on ps; everything
	// before it is in the events stream.
	for {
		msg, err := ps.ReceiveTimeout(ctx, b.opts.PingInterval)
		if err != nil {
			return false, fmt.Errorf("subscribe: %w", err)
		}
		if s, ok := msg.(*redis.Subscription); ok && s.Kind == "subscribe" {
			break
		}
	}
	if err := r.catchUp(ctx); err != nil {
		return false, err
	}
	if !b.live.Swap(true) {
		select {
		case <-b.firstLive:
			b.log.Info().Str("last_event", r.last).Msg("redis subscription restored")
		default:
			close(b.firstLive)
		}
	}
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, b.opts.PingInterval)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !pinged {
				// Quiet: make sure the connection still works.
				if err := ps.Ping(ctx); err != nil {
					return true, fmt.Errorf("ping: %w", err)
				}
				pinged = true
				continue
			}
			return true, fmt.Errorf("receive: %w", err)
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Message:
			if err := r.receive(ctx, m.Payload); err != nil {
				return true, err
			}
		case *redis.Subscription:
			// go-redis resubscribed on a new connection by itself after an
			// error: events may have been published in between.
			if m.Kind == "subscribe" {
				if err := r.catchUp(ctx); err != nil {
					return true, err
				}
			}
		}
	}
}

// receive hands on one pub/sub message "<generation> <id> <event JSON>".
func (r *subscriber) receive(ctx context.Context, payload string) error {
	gen, rest, ok1 := strings.Cut(payload, " ")
	id, data, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || !broker.ValidID(id) {
		r.bus.log.Error().Int("bytes", len(payload)).Msg("ignoring a malformed message on the events channel")
		return nil
	}
	if gen != r.gen {
		// The data was replaced under a live connection (FLUSHALL): the
		// stream knows everything of the new generation.
		return r.catchUp(ctx)
	}
	if broker.CompareIDs(id, r.last) <= 0 {
		return nil // already handed on by a catch-up
	}
	e, err := decodeEvent(id, data)
	if err != nil {
		r.bus.log.Error().Err(err).Msg("ignoring an undecodable event")
		return nil
	}
	r.last = id
	r.d.Dispatch(e)
	return nil
}

// catchUp hands on the events stream's entries after last. On the first
// subscription it only positions last at the end of the stream: events
// published before the instance started are not for it. Each page is read
// in one transaction with the generation, so a restart between pages is
// noticed.
func (r *subscriber) catchUp(ctx context.Context) error {
	b := r.bus
	first := true
	caught := 0
	defer func() {
		if caught > 0 {
			b.log.Info().Int("events", caught).Str("last_event", r.last).Msg("caught up with events published while the subscription was down")
		}
	}()
	for {
		var (
			gen  *redis.StringCmd
			info *redis.XInfoStreamCmd
			rng  *redis.XMessageSliceCmd
		)
		_, err := b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			gen = p.HGet(ctx, b.keyGen, "id")
			info = p.XInfoStream(ctx, b.keyLive)
			after := r.last
			if after == "" {
				after = "0-0"
			}
			rng = p.XRangeN(ctx, b.keyLive, "("+after, "+", catchUpPage)
			return nil
		})
		if err != nil && !errors.Is(gen.Err(), redis.Nil) && !isNoSuchKey(info.Err()) {
			return fmt.Errorf("catch up: %w", err)
		}
		if errors.Is(gen.Err(), redis.Nil) {
			// Redis came back empty and nothing was published yet: start
			// the new generation now, so later events are recognised.
			if err := generationScript.Run(ctx, b.client, []string{b.keyGen}, newGenerationID()).Err(); err != nil {
				return fmt.Errorf("catch up: create generation: %w", err)
			}
			continue
		}
		switch g := gen.Val(); {
		case r.gen == "":
			// First subscription of this instance.
			r.gen = g
			r.last = "0-0"
			if info.Err() == nil {
				r.last = info.Val().LastGeneratedID
			}
			horizon := r.last
			b.horizon.Store(&horizon)
			return nil
		case g != r.gen:
			b.log.Warn().Str("last_event", r.last).Msg("redis lost its data (restarted without persistence, or flushed): " +
				"an event published before that which this instance had not received yet is lost for its subscribers " +
				"(normally none: Redis writes events to every subscribed instance before acknowledging them); resumes from before it report a gap")
			r.gen, r.last, first = g, "0-0", true
			continue
		}
		if first && info.Err() == nil && r.last != "0-0" && info.Val().EntriesAdded > info.Val().Length {
			// The stream was trimmed; if it was trimmed past last, events
			// after last may be gone (only "may": last itself and nothing
			// after it may be what went).
			if oldest := info.Val().FirstEntry.ID; oldest != "" && broker.CompareIDs(oldest, r.last) > 0 {
				b.log.Error().Str("last_event", r.last).Str("oldest_kept", oldest).Msg("the events stream no longer holds everything after this instance's last event: events published while it was disconnected may be lost for its subscribers (raise the events stream size)")
			}
		}
		first = false
		for _, m := range rng.Val() {
			e, err := decodeEvent(m.ID, m.Values["e"])
			r.last = m.ID
			if err != nil {
				b.log.Error().Err(err).Msg("ignoring an undecodable event")
				continue
			}
			r.d.Dispatch(e)
			caught++
		}
		if len(rng.Val()) < catchUpPage {
			return nil
		}
	}
}
