package main

import (
	"context"
	"fmt"
	"time"
)

// idleMemory is scenario 3: the broker's resident memory per idle,
// subscribed connection: (VmRSS with N connections − VmRSS with none) / N,
// each read once the RSS has settled. The connections are added to the same
// broker: first up to 1,000, then up to 19,000 (the open-file limit is
// 20,000 per process, and this process holds the client ends).
func (b *bench) idleMemory(ctx context.Context) error {
	const scen = "3"
	sz := b.sz
	if need := sz.idleConns[len(sz.idleConns)-1] + 200; fileLimit() < need {
		return fmt.Errorf("open-file limit %d is below the %d this scenario needs", fileLimit(), need)
	}
	r, err := b.startRig(ctx, nil)
	if err != nil {
		return err
	}
	defer r.stop()
	// One connection and its subscription first, so the baseline holds
	// everything that is paid once (the auth cache, the collection's index
	// entry, the HTTP client to Directus), then it leaves.
	tr := newTracker(1, 1)
	warm := newPool(r.wsURL(), subscriberToken, brokerProtocol, tr)
	if err := warm.grow(ctx, 1, 1, func(int) string { return "bench_idle" }); err != nil {
		return err
	}
	warm.close()
	time.Sleep(500 * time.Millisecond)
	base, err := settledRSS(r.broker.pid)
	if err != nil {
		return err
	}
	b.rep.add(scen, "broker RSS with no connections", "MiB", nil, float64(base)/(1<<20))
	p := newPool(r.wsURL(), subscriberToken, brokerProtocol, tr)
	defer p.close()
	for _, n := range sz.idleConns {
		start := time.Now()
		if err := p.grow(ctx, n, 128, func(int) string { return "bench_idle" }); err != nil {
			return err
		}
		b.log.printf("  %d subscribed connections in %.1fs", n, time.Since(start).Seconds())
		m, err := metrics(r.broker.addr)
		if err != nil {
			return err
		}
		if int(m["broker_connections"]) != n || int(m["broker_subscriptions"]) != n {
			return fmt.Errorf("broker counts %v connections and %v subscriptions, the bench holds %d", m["broker_connections"], m["broker_subscriptions"], n)
		}
		cur, err := settledRSS(r.broker.pid)
		if err != nil {
			return err
		}
		perConn := float64(cur-base) / float64(n) / 1024
		b.log.printf("  RSS %.1f MiB (base %.1f MiB): %.1f KiB per connection", float64(cur)/(1<<20), float64(base)/(1<<20), perConn)
		var tgt *target
		if n == 19000 {
			tgt = atMost(12)
		}
		b.rep.add(scen, fmt.Sprintf("RSS per idle subscribed connection at %s", thousands(n)), "KiB", tgt, perConn)
	}
	if d := p.dropped.Load(); d > 0 {
		b.rep.add(scen, "idle connections dropped by the broker", "", atMost(0), float64(d))
	}
	return r.broker.alive()
}
