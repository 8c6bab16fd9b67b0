package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"
)

// clusterScale is scenario 10 (issue 24): three broker instances on one
// private Redis (BUS=redis, cluster reads) with the flow-install service
// user, a real Directus 11.17.4 behind the counting stub. The users of one
// role spread over the three, one event at a time to instance 0's webhook:
// Directus reads per event for the whole cluster, and webhook → last
// subscriber on any instance against one instance (BUS=memory) with the
// same users in the same run; then 10,000 users in 10 roles over the
// three; then an open loop at a fixed rate, the capacity model's
// predicted reads/s and Redis publishes/s against the measured ones.
// (The reader killed while events flow: make chaos, scenario cluster.)
func (b *bench) clusterScale(ctx context.Context) error {
	const scen = "10"
	if b.opts.noDirectus {
		b.rep.skip(scen, "cluster reads", "no Directus (-no-directus)")
		return nil
	}
	sz := b.sz
	rd, err := redistest.Start(ctx)
	if errors.Is(err, redistest.ErrDisabled) {
		b.rep.skip(scen, "cluster reads", "REDIS_TESTS=0")
		return nil
	}
	if err != nil {
		return fmt.Errorf("starting Redis: %w", err)
	}
	defer func() { _ = rd.Stop() }()
	b.log.printf("  starting Directus 11.17.4")
	dx, err := directustest.Start(ctx, directustest.Options{Version: "11.17.4"})
	if err != nil {
		return fmt.Errorf("starting Directus 11.17.4: %w", err)
	}
	defer dx.Stop()
	events := sz.classEvents
	keys := 6*(events+8) + sz.clusterRate*int(sz.clusterDur/time.Second) + 8
	w, err := newClassWorld(ctx, dx, sz.classUsers*sz.classRoles, sz.classRoles, 40, keys, 2)
	if err != nil {
		return err
	}
	client, _ := directus.NewClient(dx.URL, time.Minute)
	service, err := flow.EnsureServiceUser(ctx, client, dx.AdminToken)
	if err != nil {
		return fmt.Errorf("service user: %w", err)
	}
	stub, err := startProc(ctx, "stub", b.self, []string{"stub", "-upstream", dx.URL, "-proxy-all"}, nil, b.work)
	if err != nil {
		return err
	}
	defer stub.stop()
	env := []string{"TOKEN_CACHE_TTL=1h", "TOKEN_CHECK_RATE=0", "DIRECTUS_SERVICE_TOKEN=" + service}
	tr := newTracker(w.first, w.keys)
	next := w.first
	N := thousands(sz.classUsers)
	oneRole := func(i int) string { return w.users[i*sz.classRoles].token }

	// timeEvents posts n events one at a time to url, each timed to its
	// want receipts; it returns the latencies and the reads per event
	// summed over insts.
	timeEvents := func(url string, insts []*proc, want, n int) ([]float64, float64, error) {
		p := newPoster(url, true, 1)
		defer p.close()
		r0 := sumMetric(insts, "broker_reads_total")
		var lats []float64
		for range n {
			key := next
			next++
			tr.arm(key, want)
			tr.markSent(key, tr.now())
			if err := p.post(ctx, w.coll, key); err != nil {
				return nil, 0, err
			}
			d, ok := tr.wait(key, 2*time.Minute)
			if !ok {
				wnt, got := tr.counts(key, key+1)
				return nil, 0, fmt.Errorf("%d of %d subscribers got event %d", got, wnt, key)
			}
			lats = append(lats, ms(d))
		}
		return lats, (sumMetric(insts, "broker_reads_total") - r0) / float64(n), nil
	}
	// spread connects the users tokenOf(0..n-1) over insts, user j on
	// instance j%len(insts).
	spread := func(insts []*proc, n int, tokenOf func(int) string) ([]*pool, error) {
		var pools []*pool
		for k, in := range insts {
			p := newPool("ws://"+in.addr+"/websocket", "", brokerProtocol, tr)
			p.tokenOf = func(i int) string { return tokenOf(i*len(insts) + k) }
			m := (n - k + len(insts) - 1) / len(insts)
			if err := p.grow(ctx, m, 64, func(int) string { return w.coll }); err != nil {
				p.close()
				closePools(pools)
				return nil, err
			}
			pools = append(pools, p)
		}
		return pools, nil
	}
	// settle posts events until one costs at most want reads over insts
	// (the views take a refresh or two), for at most 20 s.
	settle := func(insts []*proc, subs int, want float64) error {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, reads, err := timeEvents("http://"+insts[0].addr+"/webhook", insts, subs, 1)
			if err != nil {
				return err
			}
			if reads <= want {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("still %.0f reads per event after 20 s", reads)
			}
		}
	}

	// One instance, the users of one role.
	single, err := b.startBroker(ctx, "broker", stub, env...)
	if err != nil {
		return err
	}
	pools, err := spread([]*proc{single}, sz.classUsers, oneRole)
	if err != nil {
		single.stop()
		return err
	}
	if _, _, err := timeEvents("http://"+single.addr+"/webhook", []*proc{single}, sz.classUsers, 2); err != nil { // warm-up
		return err
	}
	lats1, reads1, err := timeEvents("http://"+single.addr+"/webhook", []*proc{single}, sz.classUsers, events)
	closePools(pools)
	single.stop()
	if err != nil {
		return err
	}
	b.log.printf("  one instance: median %.1f ms, %.1f reads per event", median(lats1), reads1)

	// Three instances on one Redis.
	renv := append(env, "BUS=redis", "REDIS_URL="+rd.URL)
	var insts []*proc
	for i := range 3 {
		in, err := b.startBroker(ctx, "broker "+strconv.Itoa(i), stub, renv...)
		if err != nil {
			stopAll(insts)
			return err
		}
		insts = append(insts, in)
	}
	defer stopAll(insts)
	if pools, err = spread(insts, sz.classUsers, oneRole); err != nil {
		return err
	}
	if err := settle(insts, sz.classUsers, 1); err != nil {
		closePools(pools)
		return fmt.Errorf("3 instances, 1 role: %w", err)
	}
	lats3, reads3, err := timeEvents("http://"+insts[0].addr+"/webhook", insts, sz.classUsers, events)
	closePools(pools)
	if err != nil {
		return err
	}
	b.log.printf("  three instances: median %.1f ms, %.2f reads per event", median(lats3), reads3)
	b.rep.add(scen, fmt.Sprintf("webhook → last of %s users of 1 role on 1 instance (BUS=memory)", N), "ms", nil, lats1...)
	b.rep.add(scen, fmt.Sprintf("webhook → last of the same %s users over 3 instances on one Redis, any instance", N), "ms", nil, lats3...)
	b.rep.add(scen, "  3 instances ÷ 1", "×", atMost(1.2), median(lats3)/median(lats1))
	b.rep.add(scen, "  Directus reads per event, whole cluster (3 without cluster reads)", "reads", atMost(1), reads3)

	// 10,000 users in 10 roles over the three.
	all := func(i int) string { return w.users[i].token }
	M := thousands(len(w.users))
	if pools, err = spread(insts, len(w.users), all); err != nil {
		return err
	}
	defer closePools(pools)
	if err := settle(insts, len(w.users), float64(sz.classRoles)); err != nil {
		return fmt.Errorf("3 instances, %d roles: %w", sz.classRoles, err)
	}
	latsR, readsR, err := timeEvents("http://"+insts[0].addr+"/webhook", insts, len(w.users), events)
	if err != nil {
		return err
	}
	b.log.printf("  %s users in %d roles over 3 instances: median %.1f ms, %.2f reads per event", M, sz.classRoles, median(latsR), readsR)
	b.rep.add(scen, fmt.Sprintf("webhook → last of %s users in %d roles over 3 instances", M, sz.classRoles), "ms", nil, latsR...)
	b.rep.add(scen, fmt.Sprintf("  Directus reads per event, whole cluster (%d without cluster reads)", 3*sz.classRoles), "reads", atMost(float64(sz.classRoles)), readsR)

	// The capacity model at a fixed rate: E events/s to instance 0 for a
	// while, the 10 roles' groups held by all three instances.
	rdb := redis.NewClient(mustRedisOptions(rd.URL))
	defer rdb.Close()
	E, dur := sz.clusterRate, sz.clusterDur
	G := float64(sz.classRoles) // one query per role: a group per role, held by the three
	I := 3.0
	r0, pub0, eval0 := sumMetric(insts, "broker_reads_total"), commandCalls(ctx, rdb, "publish"), commandCalls(ctx, rdb, "evalsha")+commandCalls(ctx, rdb, "eval")
	smem0 := commandCalls(ctx, rdb, "smembers")
	p := newPoster("http://"+insts[0].addr+"/webhook", true, 4)
	start := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(E))
	sent := 0
	for time.Since(start) < dur {
		<-tick.C
		key := next
		next++
		tr.arm(key, len(w.users))
		tr.markSent(key, tr.now())
		if err := p.post(ctx, w.coll, key); err != nil {
			tick.Stop()
			p.close()
			return err
		}
		sent++
	}
	tick.Stop()
	p.close()
	if !tr.waitRange(next-sent, next, 2*time.Minute) {
		return fmt.Errorf("open loop: not every event reached every subscriber")
	}
	took := time.Since(start).Seconds()
	reads := (sumMetric(insts, "broker_reads_total") - r0) / took
	pubs := (commandCalls(ctx, rdb, "publish") - pub0) / took
	evals := (commandCalls(ctx, rdb, "evalsha") + commandCalls(ctx, rdb, "eval") - eval0) / took
	smems := (commandCalls(ctx, rdb, "smembers") - smem0) / took
	rate := float64(sent) / took
	// The model (README, "Capacity"): reads/s = E × G; Redis publishes/s =
	// E (each event once on the events channel) + E × G × 2 (the reader's
	// result and its heartbeat per event and group, reads < 150 ms);
	// scripts/s = E (the event's publish script); set reads/s = I × G
	// (each instance rereads its groups' sets once a second).
	predReads := rate * G
	predPubs := rate + 2*rate*G
	predEvals := rate
	predSmems := I * G
	b.log.printf("  open loop %.1f events/s for %.1f s: reads/s %.1f (model %.1f), publishes/s %.1f (model %.1f), scripts/s %.1f (model %.1f), SMEMBERS/s %.1f (model %.1f)",
		rate, took, reads, predReads, pubs, predPubs, evals, predEvals, smems, predSmems)
	b.rep.add(scen, fmt.Sprintf("open loop, %.0f events/s, %s users in %d roles over 3 instances: Directus reads/s", rate, M, sz.classRoles), "reads/s", nil, reads)
	b.rep.add(scen, "  measured ÷ the capacity model's E × G", "×", within20(), reads/predReads)
	b.rep.add(scen, "  Redis PUBLISH/s (events, results, heartbeats)", "msgs/s", nil, pubs)
	b.rep.add(scen, "  measured ÷ the model's E + 2 × E × G", "×", within20(), pubs/predPubs)
	b.rep.add(scen, "  Redis scripts/s (event publishes)", "calls/s", nil, evals)
	b.rep.add(scen, "  measured ÷ the model's E", "×", within20(), evals/predEvals)
	b.rep.add(scen, "  Redis SMEMBERS/s (the instances rereading their groups' holders)", "calls/s", nil, smems)
	b.rep.add(scen, "  measured ÷ the model's I × G", "×", within20(), smems/predSmems)
	return nil
}

func within20() *target { return about(0.2) }

func sumMetric(insts []*proc, name string) float64 {
	sum := 0.0
	for _, in := range insts {
		if m, err := metrics(in.addr); err == nil {
			sum += m[name]
		}
	}
	return sum
}

func stopAll(ps []*proc) {
	for _, p := range ps {
		p.stop()
	}
}

func closePools(ps []*pool) {
	for _, p := range ps {
		p.close()
	}
}

func mustRedisOptions(url string) *redis.Options {
	o, err := redis.ParseURL(url)
	if err != nil {
		panic(err)
	}
	return o
}

// commandCalls is Redis's count of calls of cmd (INFO commandstats;
// commands a script runs count too).
func commandCalls(ctx context.Context, rdb *redis.Client, cmd string) float64 {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":"); ok {
			for f := range strings.SplitSeq(rest, ",") {
				if v, ok := strings.CutPrefix(f, "calls="); ok {
					n, _ := strconv.ParseFloat(v, 64)
					return n
				}
			}
		}
	}
	return 0
}
