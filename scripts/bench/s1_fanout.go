package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// fanout is scenario 1: one webhook event to N subscribers of one
// collection, timed from just before the POST to the last subscriber's
// receipt, one event at a time. With a real Directus each event costs the
// broker one read of the item from Directus ("read included", the figure
// the targets are about); the same subscribers are then timed with the
// stub answering the read at once, which isolates the broker's own
// fan-out (comparable to Centrifugo's figures, which have no read at all),
// and a bare gorilla fan-out in the stub process gives the floor of this
// machine and generator.
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
	// One more round of every mode for the 10-token-group run at the end.
	keys := (len(sz.fanoutSubs)+1)*len(modes)*runs*(sz.fanoutEvents+warmup) + 10
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

	// timeRuns sends runs × (warm-up + fanoutEvents) events one at a time
	// with send, each to n subscribers, and returns each run's median and
	// p99 of the time to the last receipt.
	timeRuns := func(tr *tracker, next *int, n int, name string, send func(key int) error) (medians, p99s []float64, incomplete int, err error) {
		for run := range runs {
			var lats []time.Duration
			for i := range sz.fanoutEvents + warmup {
				key := *next
				*next++
				tr.arm(key, n)
				tr.markSent(key, tr.now())
				if err := send(key); err != nil {
					return nil, nil, 0, err
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
			b.log.printf("  %d subs, %s, run %d: median %.1f ms, p99 %.1f ms", n, name, run+1, medians[run], p99s[run])
			if err := r.broker.alive(); err != nil {
				return nil, nil, 0, err
			}
		}
		return medians, p99s, incomplete, nil
	}

	// Reference: the simplest Go fan-out (in the stub), the same clients.
	// It runs first and alone: both pools at 10,000 would not fit in one
	// process's 20,000 files.
	refTr := newTracker(1, len(sz.fanoutSubs)*runs*(sz.fanoutEvents+warmup))
	ref := newPool("ws://"+r.stub.addr+"/_bench/ws", "", brokerProtocol, refTr)
	refNext := 1
	for _, n := range sz.fanoutSubs {
		if err := ref.grow(ctx, n, 64, func(int) string { return coll }); err != nil {
			ref.close()
			return fmt.Errorf("reference fan-out: %w", err)
		}
		medians, _, incomplete, err := timeRuns(refTr, &refNext, n, "reference fan-out", func(key int) error {
			resp, err := http.Post("http://"+r.stub.addr+"/_bench/broadcast?key="+strconv.Itoa(key), "", nil)
			if err != nil {
				return err
			}
			resp.Body.Close()
			return nil
		})
		if err != nil {
			ref.close()
			return err
		}
		b.rep.add(scen, fmt.Sprintf("last of %s subs, reference fan-out (bare gorilla, no read): median", thousands(n)), "ms", nil, medians...)
		if incomplete > 0 {
			b.rep.note(fmt.Sprintf("%d events not delivered to all", incomplete))
		}
	}
	ref.close()

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
			medians, p99s, incomplete, err := timeRuns(tr, &next, n, m.name, func(key int) error { return post.post(ctx, coll, key) })
			if err != nil {
				return err
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
	// Issue 4's figure: the largest size again, its subscribers holding
	// groupTokens distinct tokens, so each event costs one read per group.
	p.close()
	n := sz.fanoutSubs[len(sz.fanoutSubs)-1]
	tokens, err := groupTokens(ctx, b, coll)
	if err != nil {
		return err
	}
	var groups []*pool
	defer func() {
		for _, g := range groups {
			g.close()
		}
	}()
	start := time.Now()
	for _, tok := range tokens {
		g := newPool(r.wsURL(), tok, brokerProtocol, tr)
		groups = append(groups, g)
		if err := g.grow(ctx, n/len(tokens), 64, func(int) string { return coll }); err != nil {
			return err
		}
	}
	b.log.printf("  %d subscribers in %d token groups in %.1fs", n, len(tokens), time.Since(start).Seconds())
	for _, m := range modes {
		if err := r.setProxy(m.proxy); err != nil {
			return err
		}
		medians, p99s, incomplete, err := timeRuns(tr, &next, n, m.name+", 10 groups", func(key int) error { return post.post(ctx, coll, key) })
		if err != nil {
			return err
		}
		var tgt *target
		if m.proxy {
			tgt = atMost(150)
		}
		b.rep.add(scen, fmt.Sprintf("last of %s subs in %d token groups, %s: median", thousands(n), len(tokens), m.name), "ms", tgt, medians...)
		b.rep.add(scen, fmt.Sprintf("last of %s subs in %d token groups, %s: p99", thousands(n), len(tokens), m.name), "ms", nil, p99s...)
		if incomplete > 0 {
			b.rep.add(scen, fmt.Sprintf("events not delivered to all (%d groups, %s)", len(tokens), m.name), "", atMost(0), float64(incomplete))
		}
	}
	if missed := tr.missed.Load(); missed > 0 {
		b.rep.add(scen, "EVENTS_MISSED notices received", "", atMost(0), float64(missed))
	}
	return nil
}

// groupTokens returns 10 distinct tokens that may read coll: with a real
// Directus, the admin's and those of 9 users of a reader role created for
// the run (the stub accepts any token).
func groupTokens(ctx context.Context, b *bench, coll string) ([]string, error) {
	tokens := []string{subscriberToken}
	for i := 1; i < 10; i++ {
		tokens = append(tokens, fmt.Sprintf("bench-group-%d", i))
	}
	if b.dx == nil {
		return tokens, nil
	}
	role, err := b.dx.CreateRoleWithReadPolicy(ctx, "bench-"+coll, coll, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("token groups: %w", err)
	}
	for _, tok := range tokens[1:] {
		if _, err := b.dx.CreateUser(ctx, tok+"@example.com", tok, role); err != nil {
			return nil, fmt.Errorf("token groups: %w", err)
		}
	}
	return tokens, nil
}

// thousands writes 10000 as 10,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
