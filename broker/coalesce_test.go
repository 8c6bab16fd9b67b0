package broker

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Callers arriving while a call runs share the next call, never the running
// one (its answer may predate them); callers of other keys never share.
func TestCoalescer(t *testing.T) {
	var c Coalescer
	var calls atomic.Int64
	running := make(chan struct{})
	release := make(chan struct{})
	first := func(context.Context) (any, error) {
		calls.Add(1)
		close(running)
		<-release
		return "first", nil
	}
	later := func(context.Context) (any, error) {
		calls.Add(1)
		return "second", nil
	}
	done := make(chan any, 1)
	go func() { v, _, _ := c.Do(context.Background(), "k", first); done <- v }()
	<-running
	var wg sync.WaitGroup
	results := make([]any, 5)
	sharedN := atomic.Int64{}
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, shared, _ := c.Do(context.Background(), "k", later)
			results[i] = v
			if shared {
				sharedN.Add(1)
			}
		}()
	}
	// Wait until all five are queued behind the running call.
	for {
		c.mu.Lock()
		next := c.keys["k"].next
		queued := next != nil && next.waiters == len(results)
		c.mu.Unlock()
		if queued {
			break
		}
		runtime.Gosched()
	}
	other, _, _ := c.Do(context.Background(), "other", func(context.Context) (any, error) { return "other", nil })
	close(release)
	wg.Wait()
	if v := <-done; v != "first" {
		t.Fatalf("first caller got %v", v)
	}
	for i, v := range results {
		if v != "second" {
			t.Fatalf("caller %d got %v: callers arriving during a call must get the next one", i, v)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2 (the running one and one shared by five)", n)
	}
	if sharedN.Load() < 4 || other != "other" {
		t.Fatalf("shared %d, other %v", sharedN.Load(), other)
	}
}

// With JoinRunning, callers share the call that is running.
func TestCoalescerJoinRunning(t *testing.T) {
	c := Coalescer{JoinRunning: true}
	running, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	fn := func(context.Context) (any, error) {
		if calls.Add(1) == 1 {
			close(running)
			<-release
		}
		return "v", nil
	}
	done := make(chan any, 1)
	go func() { v, _, _ := c.Do(context.Background(), "k", fn); done <- v }()
	<-running
	joined := make(chan bool, 1)
	go func() { _, shared, _ := c.Do(context.Background(), "k", fn); joined <- shared }()
	for {
		c.mu.Lock()
		n := c.keys["k"].current.waiters
		c.mu.Unlock()
		if n == 2 {
			break
		}
		runtime.Gosched()
	}
	close(release)
	if !<-joined || <-done != "v" || calls.Load() != 1 {
		t.Fatalf("calls %d: the second caller must share the running call", calls.Load())
	}
}
