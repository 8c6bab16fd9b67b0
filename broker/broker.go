package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Options tune the broker; zero values take the defaults.
type Options struct {
	// Shards is the number of dispatch workers. Events of one collection
	// always go to the same worker, which keeps them in order.
	Shards int
	// QueueSize bounds each worker's queue; a full queue makes Publish wait.
	QueueSize int
	// ReadConcurrency bounds the reads in flight for one event.
	ReadConcurrency int
	// ReadTimeout bounds one read made for a delivery.
	ReadTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Shards <= 0 {
		o.Shards = 8
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.ReadConcurrency <= 0 {
		o.ReadConcurrency = 32
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 10 * time.Second
	}
	return o
}

// Broker publishes events to the bus and fans out what the bus delivers.
type Broker struct {
	bus     Bus
	reader  Reader
	log     zerolog.Logger
	opts    Options
	index   *index
	metrics Metrics
	readSem chan struct{}
	shards  []*shard

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// shard is one dispatch worker and the state only it touches.
type shard struct {
	tasks chan task
	// last is the ID of the newest event dispatched, per collection.
	last map[string]string
}

// New makes a broker; Start begins dispatching.
func New(bus Bus, reader Reader, opts Options, log zerolog.Logger) *Broker {
	opts = opts.withDefaults()
	b := &Broker{
		bus: bus, reader: reader, opts: opts,
		log:     log.With().Str("component", "broker").Logger(),
		index:   newIndex(),
		readSem: make(chan struct{}, opts.ReadConcurrency),
		done:    make(chan struct{}),
	}
	for range opts.Shards {
		b.shards = append(b.shards, &shard{tasks: make(chan task, opts.QueueSize), last: map[string]string{}})
	}
	return b
}

// Start starts the workers and the bus.
func (b *Broker) Start() error {
	for _, s := range b.shards {
		b.wg.Add(1)
		go b.work(s)
	}
	return b.bus.Start(b.enqueueEvent)
}

func (b *Broker) shardOf(collection string) *shard {
	h := fnv.New32a()
	h.Write([]byte(collection))
	return b.shards[h.Sum32()%uint32(len(b.shards))]
}

// enqueueEvent is the bus's delivery callback.
func (b *Broker) enqueueEvent(e Event) {
	s := b.shardOf(e.Collection)
	select {
	case s.tasks <- task{event: e}:
	case <-b.done:
	}
}

// Publish validates events and hands them to the bus: all or none.
func (b *Broker) Publish(ctx context.Context, events []Event) error {
	for i, e := range events {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("%w: event %d: %w", ErrInvalidEvent, i, err)
		}
	}
	if err := b.bus.Publish(ctx, events); err != nil {
		return err
	}
	b.metrics.EventsPublished.Add(int64(len(events)))
	return nil
}

// ErrInvalidEvent is wrapped by Publish errors for events that fail
// validation.
var ErrInvalidEvent = errors.New("invalid event")

// AttachOptions say what a new subscription receives before live events.
type AttachOptions struct {
	// Init sends the items the query selects first.
	Init bool
	// Since replays the events after this ID first.
	Since string
	// Ack, when set, is sent once the subscription is sure to be attached,
	// before the replay and the init snapshot.
	Ack []byte
}

// ErrClosed is returned once the broker is closed; it wraps
// ErrBusUnavailable, so clients are told to retry (503).
var ErrClosed = fmt.Errorf("%w: broker closed", ErrBusUnavailable)

// Subscribe attaches s. The init snapshot and any replay come before every
// live event, with none duplicated or skipped between them. All Directus
// reads happen here, on the caller's goroutine: the collection's worker only
// records where live delivery starts and attaches s, which holds its live
// frames back until the snapshot and replay are sent. A reconnect storm of
// subscribers asking for snapshots thus never delays other events.
func (b *Broker) Subscribe(ctx context.Context, s *Subscription, opts AttachOptions) error {
	var snapshot []byte
	if opts.Init {
		rctx, cancel := context.WithTimeout(ctx, b.opts.ReadTimeout)
		data, err := b.reader.ReadSnapshot(rctx, s.Token(), s.Collection, s.Query)
		cancel()
		if err != nil {
			return err
		}
		snapshot = s.Encoder.Init(s, data)
	}
	s.hold()
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
			b.index.add(s)
		}
	})
	if err != nil {
		return err
	}
	if opts.Ack != nil {
		s.Sink.Send(opts.Ack)
	}
	if opts.Since != "" {
		if err := b.replay(ctx, s, opts.Since, boundary); err != nil {
			b.Unsubscribe(s)
			return err
		}
	}
	if snapshot != nil {
		s.Sink.Send(snapshot)
	}
	s.release()
	return nil
}

// onWorker runs fn on collection's worker, between two dispatch rounds, and
// waits for it. fn must be quick: it delays every event of the shard.
func (b *Broker) onWorker(ctx context.Context, collection string, fn func(*shard)) error {
	sh := b.shardOf(collection)
	done := make(chan struct{})
	select {
	case sh.tasks <- task{fn: func() { fn(sh); close(done) }}:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		return ErrClosed
	}
	// Wait for fn even if ctx ends: the caller must know whether it ran.
	select {
	case <-done:
		return nil
	case <-b.done:
		return ErrClosed
	}
}

// replay sends s the kept events after since, up to boundary (later ones
// reach s live), read with s's token and query.
func (b *Broker) replay(ctx context.Context, s *Subscription, since, boundary string) error {
	events, gap, err := b.bus.History(ctx, s.Collection, since)
	if err != nil {
		return fmt.Errorf("%w: history of %s: %w", ErrBusUnavailable, s.Collection, err)
	}
	if gap {
		s.Sink.Send(s.Encoder.Notice(s, Notice{Code: "HISTORY_GAP", EventID: since,
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
	if len(missed) > 0 {
		// A stand-in that is not held back, in a group of its own.
		stand := NewSubscription(s.Collection, s.Token(), s.Query, s.Actions, s.UID, s.Sink, s.Encoder)
		solo := newGroup(s.Collection, s.Token(), s.Query)
		solo.add(stand)
		b.deliver(ctx, solo, missed)
	}
	return nil
}

// Unsubscribe detaches s; it receives nothing more.
func (b *Broker) Unsubscribe(s *Subscription) {
	s.closed.Store(true)
	b.index.remove(s)
}

// Rebind makes s read with a new token from the next event on. It runs
// between two dispatch rounds, so no event reaches s twice or not at all.
func (b *Broker) Rebind(s *Subscription, token string) {
	if b.onWorker(context.Background(), s.Collection, func(*shard) { b.index.rebind(s, token) }) != nil {
		b.index.rebind(s, token) // closed: nothing is dispatched any more
	}
}

// Drain waits until every event queued so far has been dispatched.
func (b *Broker) Drain(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range b.shards {
		wg.Add(1)
		select {
		case s.tasks <- task{fn: wg.Done}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ready reports whether events can be published.
func (b *Broker) Ready(ctx context.Context) error { return b.bus.Ready(ctx) }

// Close stops the workers and the bus; idempotent.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		// Workers first: a bus reader blocked handing them an event is
		// released, so closing the bus cannot wait on a full queue.
		close(b.done)
		b.wg.Wait()
		err = b.bus.Close()
	})
	return err
}

// Metrics returns a snapshot of the counters.
func (b *Broker) Metrics() MetricsSnapshot {
	subs, groups := b.index.size()
	m := &b.metrics
	return MetricsSnapshot{
		EventsPublished: m.EventsPublished.Load(), EventsDispatched: m.EventsDispatched.Load(),
		Reads: m.Reads.Load(), ReadErrors: m.ReadErrors.Load(), FramesSent: m.FramesSent.Load(),
		EventsMissed: m.EventsMissed.Load(), Subscriptions: subs, Groups: groups,
	}
}
