package main

import (
	"context"
	"fmt"
	"time"
)

// slowConsumers is scenario 5: 1,000 subscribers of one collection receive
// a steady stream of ~16 KB frames; after a baseline, 1% of them (with a
// small receive buffer, as on a poor mobile link) stop reading.
// Their frames pile up in their sockets and then in the broker's per-client
// queue, which must not grow without bound: the broker disconnects them
// (close code 4008), counts them in broker_slow_consumers_evicted_total,
// and everyone else's latency stays as it was.
func (b *bench) slowConsumers(ctx context.Context) error {
	const scen = "5"
	var res []slowResult
	for run := range b.opts.runs {
		r, err := b.slowOnce(ctx)
		if err != nil {
			return err
		}
		b.log.printf("  run %d: p99 others %.1f → %.1f ms, evicted %d of %d in %.1fs, disconnected %d (close code 4008: %d), others dropped %d, missing %d, RSS +%.1f MiB",
			run+1, r.p99Before, r.p99During, r.evicted, r.slow, r.evictAfter.Seconds(), r.disconnected, r.closed4008, r.othersDropped, r.othersMissing, r.rssGrowth)
		res = append(res, r)
	}
	col := func(f func(slowResult) float64) []float64 {
		out := make([]float64, len(res))
		for i, r := range res {
			out[i] = f(r)
		}
		return out
	}
	slow := res[0].slow
	before := median(col(func(r slowResult) float64 { return r.p99Before }))
	b.rep.add(scen, fmt.Sprintf("p99 of the other %s subs, all reading", thousands(res[0].subs-slow)), "ms", nil, col(func(r slowResult) float64 { return r.p99Before })...)
	// "Unaffected" allows 50% plus 2 ms of noise on a shared 2-core machine.
	b.rep.add(scen, fmt.Sprintf("p99 of the others while %d stop reading", slow), "ms", atMost(1.5*before+2), col(func(r slowResult) float64 { return r.p99During })...)
	b.rep.add(scen, "slow consumers evicted (broker_slow_consumers_evicted_total)", "", atLeast(float64(slow)), col(func(r slowResult) float64 { return float64(r.evicted) })...)
	b.rep.add(scen, "slow consumers disconnected (seen by the client)", "", atLeast(float64(slow)), col(func(r slowResult) float64 { return float64(r.disconnected) })...)
	b.rep.note(fmt.Sprintf("with close code 4008: %v of %d", res[len(res)-1].closed4008, slow))
	b.rep.add(scen, "time from stop-reading to the last eviction", "s", nil, col(func(r slowResult) float64 { return r.evictAfter.Seconds() })...)
	b.rep.add(scen, "other subscribers disconnected", "", atMost(0), col(func(r slowResult) float64 { return float64(r.othersDropped) })...)
	b.rep.add(scen, "deliveries missing at the other subscribers", "", atMost(0), col(func(r slowResult) float64 { return float64(r.othersMissing) })...)
	// Bounded: 10 queues of 64 frames of ~16 KB is about 10 MB; 32 MiB
	// leaves room for the Go heap's own breathing.
	b.rep.add(scen, "broker RSS growth while they do not read (peak)", "MiB", atMost(32), col(func(r slowResult) float64 { return r.rssGrowth })...)
	return nil
}

type slowResult struct {
	subs, slow                        int
	p99Before, p99During              float64
	evicted, closed4008, disconnected int
	evictAfter                        time.Duration
	othersDropped, othersMissing      int64
	rssGrowth                         float64 // MiB
}

func (b *bench) slowOnce(ctx context.Context) (slowResult, error) {
	sz := b.sz
	res := slowResult{subs: sz.slowSubs, slow: max(sz.slowSubs/100, 1)}
	const coll = "bench_slow"
	r, err := b.startRig(ctx, []string{"-item-bytes", fmt.Sprint(sz.slowItemBytes)})
	if err != nil {
		return res, err
	}
	defer r.stop()
	baseEvents := int(sz.slowBase.Seconds() * float64(sz.slowRate))
	slowEvents := int(sz.slowDur.Seconds() * float64(sz.slowRate))
	tr := newTracker(1, sz.slowRate+baseEvents+slowEvents)
	others := newPool(r.wsURL(), subscriberToken, brokerProtocol, tr)
	defer others.close()
	slow := newPool(r.wsURL(), subscriberToken, brokerProtocol, tr)
	defer slow.close()
	// A client on a poor link: its small receive window makes the broker
	// notice within seconds rather than after megabytes of kernel buffers.
	slow.spread.smallReceiveBuffer(4096)
	if err := others.grow(ctx, res.subs-res.slow, 64, func(int) string { return coll }); err != nil {
		return res, err
	}
	if err := slow.grow(ctx, res.slow, 64, func(int) string { return coll }); err != nil {
		return res, err
	}
	post := newPoster(r.webhookURL(), true, 16)
	defer post.close()
	send := func(keys []int) {
		for _, k := range keys {
			tr.arm(k, res.subs)
		}
		openLoop(ctx, tr, post, keys, sz.slowRate, 16, func(int) string { return coll })
	}
	next := 1
	// Warm-up, not counted: the first second after 1,000 handshakes is
	// not the broker's steady state.
	keys := keyRange(&next, sz.slowRate)
	send(keys)
	tr.waitRange(keys[0], next, 10*time.Second)

	// Baseline: everyone reads.
	others.record.Store(true)
	keys = keyRange(&next, baseEvents)
	send(keys)
	if !tr.waitRange(keys[0], next, 10*time.Second) {
		return res, fmt.Errorf("baseline: not every delivery arrived")
	}
	res.p99Before = ms(percentile(others.latencies(nil), 99))
	rss0, err := rss(r.broker.pid)
	if err != nil {
		return res, err
	}

	// 1% stop reading.
	receivedBefore := int64(0)
	others.each(func(_ int, c *conn) { receivedBefore += c.received.Load() })
	slow.each(func(_ int, c *conn) { c.pause() })
	stopped := time.Now()
	stop, done := make(chan struct{}), make(chan struct{})
	peak := rss0
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			if v, err := rss(r.broker.pid); err == nil && v > peak {
				peak = v
			}
			if res.evictAfter == 0 {
				if n, err := r.metric("broker_slow_consumers_evicted_total"); err == nil && int(n) >= res.slow {
					res.evictAfter = time.Since(stopped)
				}
			}
			if ctx.Err() != nil || time.Since(stopped) > sz.slowDur+5*time.Second {
				return
			}
		}
	}()
	keys = keyRange(&next, slowEvents)
	send(keys)
	// The others must get every event; wait for them (not for the slow).
	want := int64(len(keys)) * int64(res.subs-res.slow)
	deadline := time.Now().Add(10 * time.Second)
	var got int64
	for {
		got = -receivedBefore
		others.each(func(_ int, c *conn) { got += c.received.Load() })
		if got >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	<-done
	res.othersMissing = want - got
	res.p99During = ms(percentile(others.latencies(nil), 99))
	res.rssGrowth = float64(peak-rss0) / (1 << 20)
	ev, err := r.metric("broker_slow_consumers_evicted_total")
	if err != nil {
		return res, err
	}
	res.evicted = int(ev)
	if res.evictAfter == 0 && res.evicted >= res.slow {
		res.evictAfter = time.Since(stopped)
	}
	// The slow ones read again: what piled up, then the close frame.
	slow.each(func(_ int, c *conn) { c.unpause() })
	deadline = time.Now().Add(10 * time.Second)
	for slow.dropped.Load() < int64(res.evicted) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	slow.each(func(_ int, c *conn) {
		switch c.closeCode.Load() {
		case 0: // still open
		case 4008:
			res.closed4008++
			res.disconnected++
		default: // closed without a close frame: it could not get through
			res.disconnected++
		}
	})
	res.othersDropped = others.dropped.Load()
	return res, r.broker.alive()
}
