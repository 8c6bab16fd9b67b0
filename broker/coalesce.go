package broker

import (
	"context"
	"sync"
)

// Coalescer shares one call among the concurrent callers of one key — and
// only among callers that asked before the call started: a caller arriving
// while a call runs waits for the next one, which starts as soon as the
// running one ends and serves everyone who asked meanwhile. So a shared
// answer is never older than the caller's own call would have been, which
// is what lets subscribers of one access class share a snapshot read
// without missing an event written just before they subscribed.
type Coalescer struct {
	// JoinRunning lets a caller share the call that is running, not only
	// the next one: for answers whose age does not matter (a permission
	// check), not for reads of data.
	JoinRunning bool

	mu   sync.Mutex
	keys map[string]*coalesced
}

type coalesced struct {
	running bool
	current *flight
	next    *flight
}

type flight struct {
	fn   func(context.Context) (any, error)
	ctx  context.Context
	done chan struct{}
	val  any
	err  error
	// waiters counts the callers waiting for this call.
	waiters int
}

// Do returns the answer of a call of fn for key that started after Do was
// called: its own call of fn, or (shared true) another caller's.
func (c *Coalescer) Do(ctx context.Context, key string, fn func(context.Context) (any, error)) (val any, shared bool, err error) {
	c.mu.Lock()
	if c.keys == nil {
		c.keys = map[string]*coalesced{}
	}
	st := c.keys[key]
	if st == nil {
		st = &coalesced{}
		c.keys[key] = st
	}
	if c.JoinRunning && st.current != nil {
		f := st.current
		f.waiters++
		c.mu.Unlock()
		select {
		case <-f.done:
			return f.val, true, f.err
		case <-ctx.Done():
			return nil, true, ctx.Err()
		}
	}
	f := st.next
	if f == nil {
		// The call outlives this caller's cancellation: others may share it.
		f = &flight{fn: fn, ctx: context.WithoutCancel(ctx), done: make(chan struct{})}
		st.next = f
		shared = false
	} else {
		shared = true
	}
	f.waiters++
	if !st.running {
		// Running from now on (not from when run is scheduled): a caller
		// arriving meanwhile joins it when JoinRunning.
		st.running, st.next, st.current = true, nil, f
		go c.run(key, st, f)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.val, shared, f.err
	case <-ctx.Done():
		return nil, shared, ctx.Err()
	}
}

// run makes the calls of key one after another while callers wait.
func (c *Coalescer) run(key string, st *coalesced, f *flight) {
	for f != nil {
		c.mu.Lock()
		st.current = f
		c.mu.Unlock()
		f.val, f.err = f.fn(f.ctx)
		c.mu.Lock()
		st.current = nil
		c.mu.Unlock()
		close(f.done)
		c.mu.Lock()
		f, st.next = st.next, nil
		if f == nil {
			st.running = false
			delete(c.keys, key)
		}
		c.mu.Unlock()
	}
}
