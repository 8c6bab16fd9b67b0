package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ingest is scenario 4: how many webhook events a second the broker
// accepts (202) from senders posting as fast as they can, once with
// keep-alive connections and once with Connection: close and a new TCP
// connection per event, as Directus Flows send. 1,000 subscribers spread
// over 100 collections receive them all: every event goes to one
// collection in turn and reaches its 10 subscribers, and the run checks
// afterwards that every accepted event was delivered to all of them.
// (Every event to all 1,000 would be 10 million deliveries a second at the
// target rate, a fan-out test rather than an ingest one.)
func (b *bench) ingest(ctx context.Context) error {
	const scen = "4"
	sz, runs := b.sz, b.opts.runs
	colls := collections("bench_ingest", sz.ingestColls)
	subsOf := make(map[string]int, len(colls))
	for i := range sz.ingestSubs {
		subsOf[colls[i%len(colls)]]++
	}
	// Room for up to 50,000 accepted events a second in every run.
	perRun := int(50000 * sz.ingestDur.Seconds())
	r, err := b.startRig(ctx, nil)
	if err != nil {
		return err
	}
	defer r.stop()
	tr := newTracker(1, 2*runs*perRun)
	p := newPool(r.wsURL(), subscriberToken, brokerProtocol, tr)
	defer p.close()
	if err := p.grow(ctx, sz.ingestSubs, 64, func(i int) string { return colls[i%len(colls)] }); err != nil {
		return err
	}
	next := 1
	for _, keepAlive := range []bool{true, false} {
		senders := sz.ingestSenders
		name, tgt := "keep-alive", atLeast(10000)
		if !keepAlive {
			senders /= 2
			name, tgt = "Connection: close", atLeast(3000)
		}
		var rates, undelivered, brokerCPU, stubCPU, benchCPU []float64
		var failed int64
		for run := range runs {
			post := newPoster(r.webhookURL(), keepAlive, senders)
			first := next
			keys := keyRange(&next, perRun)
			meter := newCPUMeter(r)
			accepted, fails, elapsed := flood(ctx, tr, post, keys, senders, sz.ingestDur, func(k int) string { return colls[k%len(colls)] }, subsOf)
			bc, sc, gc := meter.shares()
			brokerCPU, stubCPU, benchCPU = append(brokerCPU, bc), append(stubCPU, sc), append(benchCPU, gc)
			post.close()
			failed += fails
			last := first + int(accepted) + int(fails)
			// Deliveries to subscribers the broker disconnected never come.
			wait := 20 * time.Second
			if p.dropped.Load() > 0 {
				wait = 2 * time.Second
			}
			complete := tr.waitRange(first, last, wait)
			want, got := tr.counts(first, last)
			rates = append(rates, float64(accepted)/elapsed.Seconds())
			undelivered = append(undelivered, float64(want-got))
			b.log.printf("  %s run %d: %d events accepted in %.2fs = %.0f/s, %d failed; deliveries %d of %d (complete %v)",
				name, run+1, accepted, elapsed.Seconds(), rates[run], fails, got, want, complete)
			if !complete {
				b.log.printf("  %s; bench: %d frames with unknown keys, %d EVENTS_MISSED, %d subscribers dropped", r.brokerCounts(), tr.unknown.Load(), tr.missed.Load(), p.dropped.Load())
			}
			if err := r.broker.alive(); err != nil {
				return err
			}
			// Let TIME_WAIT sockets and queues settle between runs.
			time.Sleep(500 * time.Millisecond)
		}
		b.rep.add(scen, fmt.Sprintf("webhook events accepted per second, %s", name), "ev/s", tgt, rates...)
		b.rep.add(scen, fmt.Sprintf("deliveries missing after the %s runs (%s subs over %d colls)", name, thousands(sz.ingestSubs), len(colls)), "", atMost(0), undelivered...)
		if failed > 0 {
			b.rep.add(scen, fmt.Sprintf("webhook posts failed, %s", name), "", atMost(0), float64(failed))
		}
		if d := p.dropped.Load(); d > 0 {
			b.rep.add(scen, "subscribers disconnected by the broker (evicted as slow?)", "", atMost(0), float64(d))
		}
		b.rep.add(scen, fmt.Sprintf("CPU while posting, %s: broker / stub / bench", name), "% core", nil, brokerCPU...)
		b.rep.note(fmt.Sprintf("stub %.0f%%, bench %.0f%%", median(stubCPU), median(benchCPU)))
	}
	return nil
}

// flood posts events from keys with senders concurrent closed loops until
// dur has passed (or the keys run out), and returns the accepted and
// failed posts and the time they took. An event's deliveries are expected
// once it is posted; failed posts expect none.
func flood(ctx context.Context, tr *tracker, p *poster, keys []int, senders int, dur time.Duration, collection func(int) string, subsOf map[string]int) (accepted, failed int64, elapsed time.Duration) {
	var n, ok, bad atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(dur)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(n.Add(1)) - 1
				if i >= len(keys) {
					return
				}
				k := keys[i]
				tr.arm(k, subsOf[collection(k)])
				tr.markSent(k, tr.now())
				if err := p.post(ctx, collection(k), k); err != nil {
					tr.arm(k, 0)
					bad.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return ok.Load(), bad.Load(), time.Since(start)
}
