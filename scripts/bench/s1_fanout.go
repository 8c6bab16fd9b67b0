package main

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// fanout is scenario 1: one webhook event to N subscribers of one
// collection, timed from just before the POST to the last subscriber's
// receipt, one event at a time. With a real Directus each event costs the
// broker one read of the item from Directus ("read included", the figure
// the targets are about); the same subscribers are then timed with the
// stub answering the read at once, which isolates the broker's own
// fan-out (comparable to Centrifugo's figures, which have no read at all).
func (b *bench) fanout(ctx context.Context) error {
	const scen = "1"
	sz, runs := b.sz, b.opts.runs
	coll := "bench_fanout"
	const warmup = 2
	type mode struct {
		name  string
		proxy bool
	}
	modes := []mode{{"stub read", false}}
	if b.dx != nil {
		modes = []mode{{"Directus read", true}, {"stub read", false}}
	} else {
		b.rep.skip(scen, "Directus read", "no Directus: fan-out timed with stub reads only")
	}
	keys := len(sz.fanoutSubs)*len(modes)*runs*(sz.fanoutEvents+warmup) + 10
	first := 1
	stubArgs := []string{}
	if b.dx != nil {
		if subscriberToken != b.dx.AdminToken {
			return fmt.Errorf("the harness's admin token is %q, the bench expects %q", b.dx.AdminToken, subscriberToken)
		}
		var err error
		if first, err = prepareCollection(ctx, b.dx, coll, keys); err != nil {
			return err
		}
		// Warm Directus's caches, then time the read the broker makes.
		if _, err := readTimes(ctx, b.dx, coll, first, 5); err != nil {
			return err
		}
		reads, err := readTimes(ctx, b.dx, coll, first, 30)
		if err != nil {
			return err
		}
		b.rep.add(scen, "one Directus read alone (GET /items/c/k): median", "ms", nil, ms(percentile(reads, 50)))
		b.rep.add(scen, "one Directus read alone: p99 of 30", "ms", nil, ms(percentile(reads, 99)))
		stubArgs = []string{"-upstream", b.dx.URL}
	}
	r, err := b.startRig(ctx, stubArgs)
	if err != nil {
		return err
	}
	defer r.stop()
	tr := newTracker(first, keys)
	p := newPool(r.wsURL(), subscriberToken, brokerProtocol, tr)
	defer p.close()
	post := newPoster(r.webhookURL(), true, 4)
	defer post.close()
	next := first
	for _, n := range sz.fanoutSubs {
		start := time.Now()
		if err := p.grow(ctx, n, 64, func(int) string { return coll }); err != nil {
			return err
		}
		b.log.printf("  %d subscribers in %.1fs", n, time.Since(start).Seconds())
		for _, m := range modes {
			if err := r.setProxy(m.proxy); err != nil {
				return err
			}
			var medians, p99s []float64
			incomplete := 0
			for run := range runs {
				var lats []time.Duration
				for i := range sz.fanoutEvents + warmup {
					key := next
					next++
					tr.arm(key, n)
					tr.markSent(key, tr.now())
					if err := post.post(ctx, coll, key); err != nil {
						return err
					}
					d, complete := tr.wait(key, 15*time.Second)
					if !complete {
						incomplete++
					}
					if i >= warmup {
						lats = append(lats, d)
					}
					time.Sleep(10 * time.Millisecond)
				}
				medians = append(medians, ms(percentile(lats, 50)))
				p99s = append(p99s, ms(percentile(lats, 99)))
				b.log.printf("  %d subs, %s, run %d: median %.1f ms, p99 %.1f ms", n, m.name, run+1, medians[run], p99s[run])
				if err := r.broker.alive(); err != nil {
					return err
				}
			}
			var tgt *target
			if m.proxy {
				tgt = atMost(map[int]float64{1000: 15, 10000: 70}[n])
				if tgt.limit == 0 {
					tgt = nil
				}
			}
			label := fmt.Sprintf("last of %s subs, %s: median", thousands(n), m.name)
			b.rep.add(scen, label, "ms", tgt, medians...)
			b.rep.add(scen, fmt.Sprintf("last of %s subs, %s: p99 of %d", thousands(n), m.name, sz.fanoutEvents), "ms", nil, p99s...)
			if incomplete > 0 {
				b.rep.add(scen, fmt.Sprintf("events not delivered to all %s subs (%s)", thousands(n), m.name), "", atMost(0), float64(incomplete))
			}
		}
	}
	if missed := tr.missed.Load(); missed > 0 {
		b.rep.add(scen, "EVENTS_MISSED notices received", "", atMost(0), float64(missed))
	}
	return nil
}

// thousands writes 10000 as 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
