package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"
)

// redisChannel is the pub/sub channel of the Redis bus under its default
// prefix (broker/bus_redis.go): every event once per subscribed instance.
const redisChannel = "directus-ws-broker:events"

// scaleOut is scenario 7 (issue 6): two broker instances sharing a private
// Redis (BUS=redis), N subscribers of one collection split evenly between
// them, each event posted to instance A's webhook, one at a time, and timed
// from the POST to the last receipt over both instances (and on each). Then
// the same N subscribers on one instance with BUS=memory, the same events,
// and the difference: what going through Redis adds. Both setups use the
// same stub Directus with instant reads, so the figures are the broker's
// own (scenario 1's "stub read" rows are the one-instance figure too).
//
// The bench also subscribes to the bus's Redis channel itself, a third
// instance that does no fan-out: POST on A → the event on that channel is
// the Redis round trip every instance waits for (A included: the Redis bus
// hands A its own events through the same subscription).
func (b *bench) scaleOut(ctx context.Context) error {
	const scen = "7"
	const coll = "bench_scaleout"
	const warmup = 2
	sz, runs := b.sz, b.opts.runs
	n := sz.redisSubs
	nA := n / 2
	nB := n - nA

	rd, err := redistest.Start(ctx)
	if errors.Is(err, redistest.ErrDisabled) {
		b.rep.skip(scen, "two instances + Redis", "REDIS_TESTS=0")
		return nil
	}
	if err != nil {
		return fmt.Errorf("starting Redis: %w", err)
	}
	defer func() { _ = rd.Stop() }()
	b.log.printf("  private Redis at %s", rd.URL)

	stub, err := startProc(ctx, "stub", b.self, []string{"stub"}, nil, b.work)
	if err != nil {
		return err
	}
	defer stub.stop()
	redisEnv := []string{"BUS=redis", "REDIS_URL=" + rd.URL}
	instA, err := b.startBroker(ctx, "broker A", stub, redisEnv...)
	if err != nil {
		return err
	}
	defer instA.stop()
	instB, err := b.startBroker(ctx, "broker B", stub, redisEnv...)
	if err != nil {
		return err
	}
	defer instB.stop()
	if err := waitReady(ctx, 30*time.Second, instA, instB); err != nil {
		return err
	}

	// Keys: a probe, then warm-up and timed events for every run.
	perSetup := 1 + runs*(sz.redisEvents+warmup)
	trA := newTracker(1, perSetup)
	trB := trA.sibling()
	trRedis := trA.sibling()
	watch, err := watchRedis(ctx, rd.URL, trRedis)
	if err != nil {
		return err
	}
	defer watch.close()

	poolA := newPool("ws://"+instA.addr+"/websocket", subscriberToken, brokerProtocol, trA)
	defer poolA.close()
	poolB := newPool("ws://"+instB.addr+"/websocket", subscriberToken, brokerProtocol, trB)
	defer poolB.close()
	start := time.Now()
	for _, g := range []struct {
		p *pool
		n int
	}{{poolA, nA}, {poolB, nB}} {
		if err := g.p.grow(ctx, g.n, 64, func(int) string { return coll }); err != nil {
			return err
		}
	}
	b.log.printf("  %d + %d subscribers in %.1fs", nA, nB, time.Since(start).Seconds())

	postA := newPoster("http://"+instA.addr+"/webhook", true, 4)
	defer postA.close()
	two := []share{{"A", trA, nA, true}, {"B", trB, nB, true}, {"Redis channel", trRedis, 1, false}}
	next := 1
	// A test event must reach both instances (and the channel) before timing.
	if _, complete, err := b.timeOne(ctx, two, next, postA, coll); err != nil {
		return err
	} else if !complete {
		return fmt.Errorf("a probe event posted to A did not reach every subscriber within 15s: A %s, B %s, Redis channel %s",
			receipts(trA, next), receipts(trB, next), receipts(trRedis, next))
	}
	next++
	twoRes, err := b.timeSetup(ctx, two, &next, runs, sz.redisEvents, warmup, postA, coll, "2 instances + Redis", instA, instB)
	if err != nil {
		return err
	}
	poolA.close()
	poolB.close()
	postA.close()
	watch.close()
	instA.stop()
	instB.stop()

	// The same subscribers and events on one instance, no Redis.
	one, err := b.startBroker(ctx, "broker (memory)", stub, "BUS=memory")
	if err != nil {
		return err
	}
	defer one.stop()
	if err := waitReady(ctx, 30*time.Second, one); err != nil {
		return err
	}
	tr1 := newTracker(1, perSetup)
	pool1 := newPool("ws://"+one.addr+"/websocket", subscriberToken, brokerProtocol, tr1)
	defer pool1.close()
	start = time.Now()
	if err := pool1.grow(ctx, n, 64, func(int) string { return coll }); err != nil {
		return err
	}
	b.log.printf("  %d subscribers on one instance in %.1fs", n, time.Since(start).Seconds())
	post1 := newPoster("http://"+one.addr+"/webhook", true, 4)
	defer post1.close()
	single := []share{{"one", tr1, n, true}}
	next = 1
	if _, complete, err := b.timeOne(ctx, single, next, post1, coll); err != nil {
		return err
	} else if !complete {
		return fmt.Errorf("a probe event did not reach every subscriber of the single instance within 15s: %s", receipts(tr1, next))
	}
	next++
	oneRes, err := b.timeSetup(ctx, single, &next, runs, sz.redisEvents, warmup, post1, coll, "1 instance (memory)", one)
	if err != nil {
		return err
	}

	subs := thousands(n)
	b.rep.add(scen, fmt.Sprintf("last of %s subs, 1 instance (BUS=memory): median", subs), "ms", nil, oneRes.medians...)
	b.rep.add(scen, fmt.Sprintf("last of %s subs, 1 instance: p99 of %d", subs, sz.redisEvents), "ms", nil, oneRes.p99s...)
	b.rep.add(scen, fmt.Sprintf("last of %s subs, 2 instances + Redis (%s each), POST on A: median", subs, thousands(nA)), "ms", nil, twoRes.medians...)
	b.rep.add(scen, fmt.Sprintf("last of %s subs, 2 instances + Redis: p99 of %d", subs, sz.redisEvents), "ms", nil, twoRes.p99s...)
	b.rep.add(scen, fmt.Sprintf("2 instances: last receipt on A (%s subs, posted to): median", thousands(nA)), "ms", nil, twoRes.parts[0]...)
	b.rep.add(scen, fmt.Sprintf("2 instances: last receipt on B (%s subs, via Redis): median", thousands(nB)), "ms", nil, twoRes.parts[1]...)
	// The difference of the two rows above, not of runs paired by number:
	// the one-instance runs come after all the two-instance ones.
	b.rep.add(scen, "added latency (two instances + Redis − one instance): median", "ms", nil, median(twoRes.medians)-median(oneRes.medians))
	if runs > 1 {
		var each []string
		for i := range runs {
			each = append(each, fmt.Sprintf("%+.1f", twoRes.medians[i]-oneRes.medians[i]))
		}
		b.rep.note("run by run: " + strings.Join(each, ", ") + " ms")
	}
	b.rep.add(scen, "Redis round trip (publish → other instance): POST on A → event on the channel, median", "ms", nil, twoRes.parts[2]...)
	for _, r := range []struct {
		name string
		res  setupResult
	}{{"2 instances", twoRes}, {"1 instance", oneRes}} {
		if r.res.incomplete > 0 {
			b.rep.add(scen, fmt.Sprintf("events not delivered to all %s subs (%s)", subs, r.name), "", atMost(0), float64(r.res.incomplete))
		}
	}
	if missed := trA.missed.Load() + trB.missed.Load() + tr1.missed.Load(); missed > 0 {
		b.rep.add(scen, "EVENTS_MISSED notices received", "", atMost(0), float64(missed))
	}
	return nil
}

// share is the part of an event's deliveries that one tracker follows: the
// subscribers of one instance, or the bench's own Redis subscriber. Shares
// timed together must be siblings (one time base).
type share struct {
	name string
	tr   *tracker
	want int
	// last says the share counts toward the event's last receipt.
	last bool
}

// setupResult is one setup's per-run figures.
type setupResult struct {
	medians, p99s []float64   // POST → last receipt of the shares counted
	parts         [][]float64 // per share: median of POST → that share's last receipt
	incomplete    int
}

// timeSetup sends runs × (warmup + events) events one at a time with post,
// as scenario 1's timeRuns does, and collects each run's median and p99 of
// the time to the last receipt, and each share's median.
func (b *bench) timeSetup(ctx context.Context, shares []share, next *int, runs, events, warmup int, post *poster, coll, name string, procs ...*proc) (setupResult, error) {
	res := setupResult{parts: make([][]float64, len(shares))}
	for run := range runs {
		var lats []time.Duration
		parts := make([][]time.Duration, len(shares))
		for i := range events + warmup {
			per, complete, err := b.timeOne(ctx, shares, *next, post, coll)
			*next++
			if err != nil {
				return res, err
			}
			if !complete {
				res.incomplete++
			}
			if i >= warmup {
				var last time.Duration
				for j, s := range shares {
					parts[j] = append(parts[j], per[j])
					if s.last {
						last = max(last, per[j])
					}
				}
				lats = append(lats, last)
			}
			time.Sleep(10 * time.Millisecond)
		}
		res.medians = append(res.medians, ms(percentile(lats, 50)))
		res.p99s = append(res.p99s, ms(percentile(lats, 99)))
		var each []string
		for j, s := range shares {
			res.parts[j] = append(res.parts[j], ms(percentile(parts[j], 50)))
			if len(shares) > 1 {
				each = append(each, fmt.Sprintf("%s %.1f", s.name, res.parts[j][run]))
			}
		}
		detail := ""
		if len(each) > 0 {
			detail = " (" + strings.Join(each, ", ") + " ms)"
		}
		b.log.printf("  %s, run %d: median %.1f ms, p99 %.1f ms%s", name, run+1, res.medians[run], res.p99s[run], detail)
		for _, p := range procs {
			if err := p.alive(); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// timeOne posts the event of key and waits (15s at most) for every share's
// deliveries; it returns the time from the POST to each share's last
// receipt and whether all arrived. The receipt times are the readers', so
// waiting for the shares one after another does not blur them.
func (b *bench) timeOne(ctx context.Context, shares []share, key int, post *poster, coll string) ([]time.Duration, bool, error) {
	at := shares[0].tr.now()
	for _, s := range shares {
		s.tr.arm(key, s.want)
		s.tr.markSent(key, at)
	}
	if err := post.post(ctx, coll, key); err != nil {
		return nil, false, err
	}
	deadline := time.Now().Add(15 * time.Second)
	per := make([]time.Duration, len(shares))
	complete := true
	for i, s := range shares {
		d, ok := s.tr.wait(key, max(time.Until(deadline), 0))
		per[i] = d
		complete = complete && ok
	}
	return per, complete, nil
}

// receipts says how many deliveries of key's event a tracker saw.
func receipts(tr *tracker, key int) string {
	want, got := tr.counts(key, key+1)
	return fmt.Sprintf("%d/%d", got, want)
}

// waitReady polls each broker's /readyz until it answers 200 (with the
// Redis bus: subscribed to the channel, so events published from now on
// reach it).
func waitReady(ctx context.Context, timeout time.Duration, procs ...*proc) error {
	deadline := time.Now().Add(timeout)
	for _, p := range procs {
		for {
			resp, err := http.Get("http://" + p.addr + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if err := p.alive(); err != nil {
				return err
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: /readyz not 200 within %s (last: %v)", p.name, timeout, readyzStatus(resp, err))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

func readyzStatus(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// redisWatch is the bench's own subscription to the bus's channel: it
// records when each event is on the channel in a tracker.
type redisWatch struct {
	client *redis.Client
	sub    *redis.PubSub
	done   chan struct{}
}

// watchRedis subscribes to the bus's channel at url and records each
// message's event key in tr. A message is "<generation> <id> <event JSON>";
// the event's keys come before its payload, as in the broker's frames.
func watchRedis(ctx context.Context, url string, tr *tracker) (*redisWatch, error) {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	client := redis.NewClient(opts)
	sub := client.Subscribe(ctx, redisChannel)
	if _, err := sub.Receive(ctx); err != nil {
		_ = sub.Close()
		_ = client.Close()
		return nil, fmt.Errorf("subscribing to %s: %w", redisChannel, err)
	}
	w := &redisWatch{client: client, sub: sub, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for msg := range sub.Channel() {
			now := tr.now()
			if key, ok := brokerKey([]byte(msg.Payload)); ok {
				tr.observe(key, now)
			}
		}
	}()
	return w, nil
}

// close ends the subscription; idempotent.
func (w *redisWatch) close() {
	select {
	case <-w.done:
		return
	default:
	}
	_ = w.sub.Close()
	<-w.done
	_ = w.client.Close()
}
