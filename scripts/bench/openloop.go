package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// openLoop sends the events of keys to the webhook at rate per second on a
// fixed schedule that never waits for answers: event i is due at
// start + i/rate, its latency is measured from that due time (so a broker
// that answers slowly cannot slow the sender down and hide its own delay —
// no coordinated omission), and a pool of workers does the POSTs.
// collection maps a key to its collection. It returns how far behind
// schedule the sender ever fell and how many posts failed.
func openLoop(ctx context.Context, tr *tracker, p *poster, keys []int, rate int, workers int, collection func(key int) string) (maxLag time.Duration, failed int64) {
	jobs := make(chan int, len(keys))
	var fails atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				if ctx.Err() != nil {
					fails.Add(1)
					continue
				}
				if err := p.post(ctx, collection(k), k); err != nil {
					fails.Add(1)
				}
			}
		}()
	}
	interval := int64(time.Second) / int64(rate)
	start := tr.now() + int64(time.Millisecond)
	for i, k := range keys {
		due := start + int64(i)*interval
		if d := due - tr.now(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		tr.markSent(k, due)
		if lag := time.Duration(tr.now() - due); lag > maxLag {
			maxLag = lag
		}
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	return maxLag, fails.Load()
}

// keyRange returns the n keys from *next on and advances *next.
func keyRange(next *int, n int) []int {
	keys := make([]int, n)
	for i := range keys {
		keys[i] = *next + i
	}
	*next += n
	return keys
}
