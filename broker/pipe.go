package broker

import (
	"sync"
	"time"
)

// Each group delivers on a pipeline of its own. A shard's worker hands a
// batch to every group of the collection and goes on to the next batch at
// once: a group whose reads are slow (a client with many distinct queries,
// a query Directus takes long to answer) falls behind alone, and the
// others' next events do not wait for it. A group's events stay in order
// (one delivery at a time, batches merged while it is busy), and every
// control task (attach, rebind, access barriers, Drain, Stop) first waits
// until every pipeline of its shard is idle, so it sees every event before
// it delivered that it depends on: barriers, Drain and Stop wait for every
// pipeline of the shard, an attach or rebind only for the groups it joins
// and leaves (so a client subscribing does not wait for a slow group of
// another).

// pipeline is a group's delivery state, guarded by mu.
type pipeline struct {
	mu      sync.Mutex
	cond    *sync.Cond
	running bool
	pending []Event
	// since is when the oldest event not yet delivered to the group was
	// received (unix ns; 0 when idle).
	since int64
}

// waitIdle returns once the group's pipeline delivered everything handed
// to it (called on the shard's worker, which alone hands it more).
func (p *pipeline) waitIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.running {
		p.cond.Wait()
	}
}

// quiesced wraps a control task that must see every event before it
// delivered: it first waits for every pipeline of the shard.
func (sh *shard) quiesced(fn func()) func() {
	return func() {
		sh.pipes.wait()
		fn()
	}
}

// pipes are a shard's running pipelines. A group is counted once per run
// registered: a run ending removes its registration after the group may
// already have started the next (the worker starts it as soon as running
// is false), so a plain set would drop the new run's (issue 19.4: a busy
// group vanished from the lag and /readyz).
type pipes struct {
	mu      sync.Mutex
	running map[*group]int
	idle    sync.WaitGroup
}

// wait returns once no pipeline of the shard runs.
func (p *pipes) wait() { p.idle.Wait() }

// oldest is the receive time of the oldest event a pipeline of the shard
// has not delivered (0: none).
func (p *pipes) oldest() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	oldest := int64(0)
	for g := range p.running {
		g.pipe.mu.Lock()
		t := g.pipe.since
		g.pipe.mu.Unlock()
		if t != 0 && (oldest == 0 || t < oldest) {
			oldest = t
		}
	}
	return oldest
}

func (p *pipes) add(g *group) {
	p.mu.Lock()
	if p.running == nil {
		p.running = map[*group]int{}
	}
	p.running[g]++
	p.mu.Unlock()
}

func (p *pipes) remove(g *group) {
	p.mu.Lock()
	if p.running[g]--; p.running[g] <= 0 {
		delete(p.running, g)
	}
	p.mu.Unlock()
}

func receivedNS(events []Event) int64 {
	if t := oldestReceived(events); !t.IsZero() {
		return t.UnixNano()
	}
	return 0
}

// pipeTo hands events to g: delivered now on a new pipeline, or after what
// g is delivering.
func (b *Broker) pipeTo(sh *shard, g *group, events []Event) {
	p := &g.pipe
	p.mu.Lock()
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
	}
	if p.running {
		// Bounded: past Options.GroupBacklog the worker waits for the group,
		// and its queue fills (the webhook then answers 503) instead of
		// memory.
		for len(p.pending) >= b.opts.GroupBacklog && p.running && !b.stopping.Load() {
			p.cond.Wait()
		}
		if p.running {
			if len(p.pending) == 0 {
				if t := receivedNS(events); t != 0 && (p.since == 0 || t < p.since) {
					p.since = t
				}
			}
			p.pending = append(p.pending, events...)
			p.mu.Unlock()
			return
		}
	}
	p.running = true
	p.since = receivedNS(events)
	p.mu.Unlock()
	sh.pipes.idle.Add(1)
	sh.pipes.add(g)
	go b.runPipe(sh, g, events)
}

// runPipe delivers events to g, then whatever was handed to it meanwhile,
// until nothing is left.
func (b *Broker) runPipe(sh *shard, g *group, events []Event) {
	defer sh.pipes.idle.Done()
	p := &g.pipe
	for {
		if b.stopping.Load() {
			b.skip(events) // Stop tells the subscriptions not sent these
		} else if shared := b.awaitShared(b.readCtx, g, events); shared != nil {
			_ = b.deliver(b.readCtx, g, events, shared) // no read here: no read slot
			if b.stopping.Load() {
				b.skip(events)
			}
			b.observeDelivered(events)
		} else if owner := g.owner(); b.readSem.acquire(b.readCtx, owner) != nil {
			b.skip(events) // closing
		} else {
			start := time.Now()
			_ = b.deliver(b.readCtx, g, events, nil)
			b.readSem.release(owner, time.Since(start))
			if b.stopping.Load() {
				b.skip(events) // cut short by Stop
			}
			b.observeDelivered(events)
		}
		p.mu.Lock()
		if len(p.pending) == 0 {
			p.running, p.since = false, 0
			p.cond.Broadcast()
			p.mu.Unlock()
			sh.pipes.remove(g)
			return
		}
		events, p.pending = p.pending, nil
		p.since = receivedNS(events)
		p.cond.Broadcast()
		p.mu.Unlock()
	}
}

// owner is whose turn a group's reads take at the read slots: the one
// owner of all its members, or the group itself when it serves several.
func (g *group) owner() any {
	members := g.members()
	if len(members) == 0 {
		return g
	}
	o := members[0].owner()
	for _, s := range members[1:] {
		if s.owner() != o {
			return g
		}
	}
	return o
}

func (b *Broker) observeDelivered(events []Event) {
	if o := b.opts.Observer; o != nil {
		for _, e := range events {
			if !e.Received.IsZero() {
				o.Delivered(time.Since(e.Received))
			}
		}
	}
}
