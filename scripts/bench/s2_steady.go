package main

import (
	"context"
	"fmt"
	"time"
)

// steady is scenario 2: 10,000 subscribers spread evenly over 100
// collections, 1,000 events a second open-loop, each event to one
// collection in turn (so 100 deliveries per event, 100,000 a second). It
// reports the broker's CPU time per delivered message (utime+stime from
// /proc over the run, drain included), the p99 of every delivery's latency
// from its event's scheduled send time, and the deliveries that never came.
// Item reads go to the stub: one real Directus cannot serve 1,000 reads a
// second (scenario 1's "Directus read alone" row says what one costs).
func (b *bench) steady(ctx context.Context) error {
	const scen = "2"
	sz, runs := b.sz, b.opts.runs
	colls := collections("bench_steady", sz.steadyColls)
	perRun := int(sz.steadyDur.Seconds() * float64(sz.steadyRate))
	warm := sz.steadyRate // one second of warm-up, not counted
	r, err := b.startRig(ctx, nil)
	if err != nil {
		return err
	}
	defer r.stop()
	tr := newTracker(1, warm+runs*perRun)
	p := newPool(r.wsURL(), subscriberToken, brokerProtocol, tr)
	defer p.close()
	subsOf := make(map[string]int, len(colls))
	for i := range sz.steadySubs {
		subsOf[colls[i%len(colls)]]++
	}
	connect := time.Now()
	if err := p.grow(ctx, sz.steadySubs, 64, func(i int) string { return colls[i%len(colls)] }); err != nil {
		return err
	}
	b.log.printf("  %d subscribers over %d collections in %.1fs", sz.steadySubs, len(colls), time.Since(connect).Seconds())
	collOf := func(k int) string { return colls[k%len(colls)] }
	post := newPoster(r.webhookURL(), true, 64)
	defer post.close()
	send := func(keys []int) (time.Duration, int64) {
		for _, k := range keys {
			tr.arm(k, subsOf[collOf(k)])
		}
		return openLoop(ctx, tr, post, keys, sz.steadyRate, 64, collOf)
	}
	next := 1
	warmKeys := keyRange(&next, warm)
	send(warmKeys)
	tr.waitRange(warmKeys[0], next, 10*time.Second)
	var cpuPer, p50s, p99s, drops, lags, rates, brokerCPU, stubCPU, benchCPU []float64
	var fails int64
	for run := range runs {
		p.record.Store(true)
		p.latencies(nil) // drop the warm-up's
		keys := keyRange(&next, perRun)
		cpu0, err := cpuTime(r.broker.pid)
		if err != nil {
			return err
		}
		t0 := time.Now()
		meter := newCPUMeter(r)
		lag, failed := send(keys)
		bc, sc, gc := meter.shares()
		brokerCPU, stubCPU, benchCPU = append(brokerCPU, bc), append(stubCPU, sc), append(benchCPU, gc)
		sendTime := time.Since(t0)
		wait := 10 * time.Second
		if p.dropped.Load() > 0 {
			wait = 2 * time.Second // deliveries to disconnected subscribers never come
		}
		complete := tr.waitRange(keys[0], next, wait)
		cpu1, err := cpuTime(r.broker.pid)
		if err != nil {
			return err
		}
		p.record.Store(false)
		want, got := tr.counts(keys[0], next)
		lats := p.latencies(nil)
		fails += failed
		cpuPer = append(cpuPer, float64((cpu1-cpu0).Microseconds())/float64(max(got, 1)))
		p50s = append(p50s, ms(percentile(lats, 50)))
		p99s = append(p99s, ms(percentile(lats, 99)))
		drops = append(drops, float64(want-got))
		lags = append(lags, ms(lag))
		rates = append(rates, float64(len(keys))/sendTime.Seconds())
		b.log.printf("  run %d: %d deliveries (%d expected, complete %v), broker CPU %v = %.1f µs/delivery, p50 %.1f ms, p99 %.1f ms, max send lag %.1f ms",
			run+1, got, want, complete, cpu1-cpu0, cpuPer[run], p50s[run], p99s[run], lags[run])
		if !complete {
			b.log.printf("  %s; bench: %d frames with unknown keys, %d EVENTS_MISSED, %d subscribers dropped", r.brokerCounts(), tr.unknown.Load(), tr.missed.Load(), p.dropped.Load())
		}
		if err := r.broker.alive(); err != nil {
			return err
		}
	}
	label := fmt.Sprintf("%s subs / %d colls @ %s ev/s", thousands(sz.steadySubs), len(colls), thousands(sz.steadyRate))
	b.rep.add(scen, "broker CPU per delivered message, "+label, "µs", atMost(8), cpuPer...)
	b.rep.add(scen, "delivery latency p99 (from scheduled send)", "ms", nil, p99s...)
	b.rep.add(scen, "delivery latency p50", "ms", nil, p50s...)
	b.rep.add(scen, "deliveries dropped (expected − received)", "", atMost(0), drops...)
	b.rep.add(scen, "events sent per second (achieved)", "ev/s", nil, rates...)
	b.rep.add(scen, "sender's max lag behind schedule", "ms", nil, lags...)
	b.rep.add(scen, "CPU while sending: broker", "% core", nil, brokerCPU...)
	b.rep.add(scen, fmt.Sprintf("CPU while sending: Directus stub (%s reads/s)", thousands(sz.steadyRate)), "% core", nil, stubCPU...)
	b.rep.add(scen, fmt.Sprintf("CPU while sending: bench (posts + %s frames/s read)", thousands(sz.steadyRate*sz.steadySubs/len(colls))), "% core", nil, benchCPU...)
	if d := p.dropped.Load(); d > 0 {
		b.rep.add(scen, "subscribers disconnected by the broker (evicted as slow?)", "", atMost(0), float64(d))
	}
	if fails > 0 {
		b.rep.add(scen, "webhook posts failed", "", atMost(0), float64(fails))
	}
	if missed := tr.missed.Load(); missed > 0 {
		b.rep.add(scen, "EVENTS_MISSED notices received", "", atMost(0), float64(missed))
	}
	return nil
}
