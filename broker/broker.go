package broker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Options tune the broker; zero values take the defaults.
type Options struct {
	// Shards is the number of dispatch workers. Events of one collection
	// always go to the same worker, which keeps them in order.
	Shards int
	// QueueSize bounds the events waiting for each worker; a full queue
	// makes Publish answer ErrQueueFull (a bus reading from the network
	// waits instead).
	QueueSize int
	// GroupBacklog bounds the events waiting in one group's pipeline
	// behind the batch it delivers; past it the worker waits for the group
	// (and its queue fills).
	GroupBacklog int
	// ReadConcurrency bounds the delivery reads in flight across the whole
	// broker (every worker, every group).
	ReadConcurrency int
	// ReadTimeout bounds one read made for a delivery.
	ReadTimeout time.Duration
	// MaxHeldBytes bounds the live frames held back per subscription while
	// its replay and snapshot are sent; beyond it they are reported missed.
	MaxHeldBytes int
	// HeldBytes bounds the live frames held back across all subscriptions
	// together; beyond it they are reported missed too.
	HeldBytes int
	// Classifier groups subscriptions by access class; TokenClasses if nil.
	Classifier Classifier
	// Access is told of access changes and refreshes the Classifier; none
	// if nil (classes never change then).
	Access AccessWatcher
	// AccessRefresh is how often everything that decides the classes is
	// reread even without events (the safety net); 0 = never.
	AccessRefresh time.Duration
	// AccessTimeout bounds one reread. Default 30s.
	AccessTimeout time.Duration
	// Observer is told of latencies (nil: nobody).
	Observer Observer
	// Cluster shares group reads with other instances (nil: none).
	Cluster Cluster
}

// Observer is told what the counters of Metrics cannot say: latencies.
type Observer interface {
	// Delivered: an event was queued for every subscriber that gets it, d
	// after the webhook received it.
	Delivered(d time.Duration)
}

func (o Options) withDefaults() Options {
	if o.Shards <= 0 {
		o.Shards = 8
	}
	if o.GroupBacklog <= 0 {
		o.GroupBacklog = 4 * maxBatch
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
	if o.MaxHeldBytes <= 0 {
		o.MaxHeldBytes = 1 << 20
	}
	if o.HeldBytes <= 0 {
		o.HeldBytes = 256 << 20
	}
	if o.Classifier == nil {
		o.Classifier = TokenClasses{}
	}
	if o.AccessTimeout <= 0 {
		o.AccessTimeout = 30 * time.Second
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
	readSem *fairSem
	shards  []*shard
	access  *accessWorker
	// doubts are the access events arrived and not yet applied.
	doubts doubts
	// replayReads shares the reads of resumes within a class; splitReads
	// the reads of KeySplitter's shared keys (per batch: joining a running
	// one is as fresh as a read of that batch needs).
	replayReads Coalescer
	splitReads  Coalescer
	splitDone   splitMemo
	// held is what every subscription being set up holds back, together.
	held heldBudget

	// Stop: no frame is queued once stopping is set; reads use readCtx,
	// which Stop cancels; skipped collects the events not dispatched.
	stopping    atomic.Bool
	readCtx     context.Context
	cancelReads context.CancelFunc
	// accessCtx bounds the model's rereads: EndAccessChanges cancels it
	// (a shutdown), Stop and Close too (it derives from readCtx).
	accessCtx    context.Context
	cancelAccess context.CancelFunc
	skippedMu    sync.Mutex
	skipped      []Event

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup
}

// shard is one dispatch worker and the state only it touches.
type shard struct {
	queue *queue
	// last is the ID of the newest event dispatched, per collection.
	last map[string]string
	// busySince is when the oldest event of the batch being dispatched
	// was received (unix ns; 0 when idle): part of the lag.
	busySince atomic.Int64
	// pipes are the groups delivering (see pipe.go).
	pipes pipes
}

// New makes a broker; Start begins dispatching.
func New(bus Bus, reader Reader, opts Options, log zerolog.Logger) *Broker {
	opts = opts.withDefaults()
	b := &Broker{
		bus: bus, reader: reader, opts: opts,
		log:     log.With().Str("component", "broker").Logger(),
		index:   newIndex(),
		readSem: newFairSem(opts.ReadConcurrency),
		done:    make(chan struct{}),
		held:    heldBudget{max: int64(opts.HeldBytes)},
	}
	b.splitReads.JoinRunning = true
	for range opts.Shards {
		b.shards = append(b.shards, &shard{queue: newQueue(opts.QueueSize), last: map[string]string{}})
	}
	if as, ok := opts.Classifier.(AddrScoped); ok {
		b.index.addrScoped = as.AddrScoped
	}
	b.access = newAccessWorker(b)
	b.readCtx, b.cancelReads = context.WithCancel(context.Background())
	b.accessCtx, b.cancelAccess = context.WithCancel(b.readCtx)
	return b
}

// Start starts the workers and the bus.
func (b *Broker) Start() error {
	for _, s := range b.shards {
		b.wg.Add(1)
		go b.work(s)
	}
	b.wg.Add(1)
	go b.access.run()
	return b.bus.Start(dispatcher{b})
}

func (b *Broker) shardIndex(collection string) int {
	h := fnv.New32a()
	h.Write([]byte(collection))
	return int(h.Sum32() % uint32(len(b.shards)))
}

func (b *Broker) shardOf(collection string) *shard { return b.shards[b.shardIndex(collection)] }

// dispatcher is the broker as its bus's Dispatcher.
type dispatcher struct{ b *Broker }

// Dispatch implements Dispatcher. An access event puts a barrier into
// every shard instead (see accessChanged).
func (d dispatcher) Dispatch(e Event) {
	if d.b.isAccessEvent(e) {
		if bar := d.b.accessBarrier(e); bar != nil {
			bar.push(d.b.shards)
			d.b.access.enqueue(bar)
		} // else applied quietly
		if !d.b.delivered(e) {
			return
		}
	}
	d.b.shardOf(e.Collection).queue.pushEvent(e, d.b.done)
}

// TryDispatch implements Dispatcher.
func (d dispatcher) TryDispatch(events []Event) error {
	per := map[int][]task{}
	var bars []*barrier
	for _, e := range events {
		if d.b.isAccessEvent(e) {
			if bar := d.b.accessBarrier(e); bar != nil {
				bars = append(bars, bar)
				for i, sh := range d.b.shards {
					if bar.at[i] != nil {
						per[i] = append(per[i], task{fn: sh.quiesced(bar.park(i))})
					}
				}
			} // else applied quietly
			if !d.b.delivered(e) {
				continue
			}
		}
		i := d.b.shardIndex(e.Collection)
		per[i] = append(per[i], task{event: e})
	}
	if err := tryPushAll(d.b.shards, per); err != nil {
		// Nothing was queued: the changes are not pending either.
		for _, bar := range bars {
			d.b.doubts.remove(bar.doubt)
		}
		return err
	}
	for _, bar := range bars {
		d.b.access.enqueue(bar)
	}
	return nil
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

// ErrClosed is returned once the broker is closed; it wraps
// ErrBusUnavailable, so clients are told to retry (503).
var ErrClosed = fmt.Errorf("%w: broker closed", ErrBusUnavailable)

// ErrDetached is returned by Subscribe when the subscription was detached
// (its connection closed) while it was being attached.
var ErrDetached = errors.New("subscription detached while attaching")

// classOf is s's access class for its collection and query now.
func (b *Broker) classOf(s *Subscription) string {
	return b.opts.Classifier.Class(s.Credentials(), s.Collection, s.Query)
}

// Unsubscribe detaches s; it receives nothing more.
func (b *Broker) Unsubscribe(s *Subscription) {
	s.sendMu.Lock() // waits for a frame being queued: none follows
	s.closed.Store(true)
	s.sendMu.Unlock()
	b.index.remove(s)
	s.held.discard()
}

// Rebind makes s read with cred from the next event on, in the group of
// cred's class; a suspended s resumes. It runs between two dispatch rounds,
// so no event reaches s twice or not at all.
func (b *Broker) Rebind(s *Subscription, cred Credentials) {
	rebind := func(*shard) {
		since := b.doubts.classifying()
		class := b.opts.Classifier.Class(cred, s.Collection, s.Query)
		// Both groups' pipelines deliver what came before first: s gets
		// those from its old group, and none of them again from the new.
		// The new credentials take effect only then: until its pipeline is
		// idle the old group may still pick s's token to read for all its
		// members, and it must be the old class's.
		if old := b.index.groupOf(s); old != nil && old.class != class {
			old.pipe.waitIdle()
			if g := b.index.find(s.Collection, class, s.queryKey); g != nil {
				g.pipe.waitIdle()
			}
		}
		s.cred.Store(&cred)
		b.index.move(s, class)
		s.suspended.Store(false)
		s.missing.Store(false)
		b.classified(s, since)
	}
	if b.onWorker(context.Background(), s.Collection, rebind) != nil {
		rebind(nil) // closed: nothing is dispatched any more
	}
}

// Suspend stops data reaching s: until Rebind it is told of each event it
// misses instead (its token was refused or expired).
func (b *Broker) Suspend(s *Subscription) { s.suspended.Store(true) }

// onWorker runs fn on collection's worker, between two dispatch rounds, and
// waits for it. fn must be quick: it delays every event of the shard.
func (b *Broker) onWorker(ctx context.Context, collection string, fn func(*shard)) error {
	sh := b.shardOf(collection)
	done := make(chan struct{})
	select {
	case <-b.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	default:
	}
	sh.queue.pushControl(func() { fn(sh); close(done) })
	// Wait for fn even if ctx ends: the caller must know whether it ran.
	select {
	case <-done:
		return nil
	case <-b.done:
		return ErrClosed
	}
}

// EndAccessChanges cancels the model's reread in progress and every later
// one: a shutdown delivers what was published (Drain) instead of holding
// it behind a reread whose model it will not use. Those changes count as
// failed rereads: what they concern is read per user (fail closed).
func (b *Broker) EndAccessChanges() { b.cancelAccess() }

// Drain waits until every event queued so far has been dispatched.
func (b *Broker) Drain(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range b.shards {
		wg.Add(1)
		s.queue.pushControl(s.quiesced(wg.Done))
	}
	ch := make(chan struct{})
	go func() { wg.Wait(); close(ch) }()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		return ErrClosed
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
		b.cancelReads()
		b.wg.Wait()
		err = b.bus.Close()
	})
	return err
}

// Lag is the age of the oldest event received and not yet delivered (0
// when none waits): how far behind the broker is.
func (b *Broker) Lag() time.Duration {
	oldest := int64(0)
	for _, s := range b.shards {
		for _, t := range []int64{s.queue.oldest(), s.busySince.Load(), s.pipes.oldest()} {
			if t != 0 && (oldest == 0 || t < oldest) {
				oldest = t
			}
		}
	}
	if oldest == 0 {
		return 0
	}
	return time.Since(time.Unix(0, oldest))
}

// Metrics returns a snapshot of the counters.
func (b *Broker) Metrics() MetricsSnapshot {
	subs, groups := b.index.size()
	m := &b.metrics
	depth := 0
	for _, s := range b.shards {
		depth += s.queue.depth()
	}
	return MetricsSnapshot{
		EventsPublished: m.EventsPublished.Load(), EventsDispatched: m.EventsDispatched.Load(),
		Reads: m.Reads.Load(), ReadErrors: m.ReadErrors.Load(), FramesSent: m.FramesSent.Load(),
		EventsMissed: m.EventsMissed.Load(), Subscriptions: subs, Groups: groups, QueueDepth: depth,
		AccessChanges: m.AccessChanges.Load(), Regrouped: m.Regrouped.Load(), HistoryGaps: m.HistoryGaps.Load(),
		ApartReads: m.ApartReads.Load(), HeldBytes: b.held.used.Load(),
		ClusterResults: m.ClusterResults.Load(), ClusterTakeovers: m.ClusterTakeovers.Load(),
	}
}
