package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"
)

// clusterReads (issue 24): three instances on one Redis with the service
// token flow install makes, the users of one role spread over them, events
// at the scenario's rate. While all three run, the cluster makes one
// Directus read per event; then the reading instance is SIGKILLed while
// events go on: the two others take its reads over within a bounded time,
// and their subscribers get every acknowledged event once, or reported.
func (c *chaos) clusterReads(ctx context.Context) error {
	const coll = "chaos_cluster"
	w, err := newWorld(ctx, c.dx, "cluster", coll, 50, max(3, c.sz.users))
	if err != nil {
		return err
	}
	client, err := directus.NewClient(c.dx.URL, time.Minute)
	if err != nil {
		return err
	}
	service, err := flow.EnsureServiceUser(ctx, client, c.dx.AdminToken)
	if err != nil {
		return fmt.Errorf("service user: %w", err)
	}
	r, err := redistest.Start(ctx)
	if err != nil {
		return fmt.Errorf("starting Redis: %w", err)
	}
	defer func() { _ = r.Stop() }()
	env := []string{"BUS=redis", "REDIS_URL=" + r.URL, "DIRECTUS_SERVICE_TOKEN=" + service, "CLUSTER_READS=true"}
	var procs []*brokerProc
	for range 3 {
		p, err := c.startBroker(ctx, env...)
		if err != nil {
			return err
		}
		defer func() { _ = p.terminate(20 * time.Second) }()
		procs = append(procs, p)
	}
	// User i on instance i%3: every instance holds members of the one
	// group (the role's class and the query).
	var (
		mu     sync.Mutex
		latest = map[int]map[string]time.Time{} // instance → event → first receipt there
	)
	onEvent := func(inst int) func(string, time.Time) {
		return func(id string, at time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if latest[inst] == nil {
				latest[inst] = map[string]time.Time{}
			}
			if t, ok := latest[inst][id]; !ok || at.After(t) {
				latest[inst][id] = at // the last of its subscribers there
			}
		}
	}
	subs := make([][]*subscriber, 3)
	for i, p := range procs {
		var mine []string
		for j, u := range w.users {
			if j%3 == i {
				mine = append(mine, u)
			}
		}
		if subs[i], err = connectAll(ctx, p.wsURL(), mine, max(1, c.sz.perUser), coll, onEvent(i)); err != nil {
			return err
		}
		defer closeAll(subs[i])
	}
	reads := func() (sum float64, per []float64) {
		for _, p := range procs {
			v := p.metric("broker_reads_total")
			per = append(per, v)
			sum += v
		}
		return sum, per
	}
	// One event at a time, each flushed to every subscriber of subs:
	// Directus reads per event for the whole cluster, and per instance.
	pub := newPublisher(procs[0].webhookURL(), true)
	steady := func(n int, subs []*subscriber) (float64, []float64, error) {
		before, per0 := reads()
		for i := range n {
			if err := flush(ctx, pub, coll, w.keys[coll][i%len(w.keys[coll])], subs); err != nil {
				return 0, nil, err
			}
		}
		after, per1 := reads()
		for i := range per1 {
			per1[i] -= per0[i]
		}
		return (after - before) / float64(n), per1, nil
	}
	everyone := append(append(append([]*subscriber(nil), subs[0]...), subs[1]...), subs[2]...)
	// The views settle within a refresh or two; until then instances read
	// for themselves.
	perEvent, per := 0.0, []float64(nil)
	if err := until(ctx, 20*time.Second, func() bool {
		perEvent, per, err = steady(3, everyone)
		return err != nil || perEvent <= 1.0
	}); err != nil {
		return fmt.Errorf("the cluster never came to one read per event (last %.2f): %w", perEvent, err)
	}
	if err != nil {
		return err
	}
	if perEvent, per, err = steady(20, everyone); err != nil {
		return err
	}
	c.log("cluster: reads per instance over 20 events: %v", per)
	c.rep.must("cluster", "3 instances, one role: Directus reads per event, whole cluster", fmt.Sprintf("%.2f", perEvent), perEvent <= 1.0)
	results := 0.0
	for _, p := range procs {
		results += p.metric("broker_cluster_results_total")
	}
	c.rep.must("cluster", "events delivered from another instance's read", fmt.Sprint(results), results > 0)
	// The reader: the instance whose reads grew.
	victim := -1
	for i, n := range per {
		if n > 0 {
			victim = i
		}
	}
	if victim < 0 {
		return fmt.Errorf("no instance read (reads %v)", per)
	}
	survivors := []int{}
	for i := range procs {
		if i != victim {
			survivors = append(survivors, i)
		}
	}
	c.log("instance %d reads for the cluster; SIGKILL while events flow at %d/s", victim, c.sz.rate)
	pub = newPublisher(procs[survivors[0]].webhookURL(), true)
	pctx, stopPub := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { pub.run(pctx, c.sz.rate, []string{coll}, w.keys); close(done) }()
	defer func() { stopPub(); <-done }()
	if err := wait(ctx, 2*time.Second); err != nil {
		return err
	}
	killedAt := time.Now()
	procs[victim].kill()
	if err := wait(ctx, 5*time.Second); err != nil {
		return err
	}
	stopPub()
	<-done
	var alive []*subscriber
	for _, i := range survivors {
		alive = append(alive, subs[i]...)
	}
	if err := flush(ctx, pub, coll, w.keys[coll][0], alive); err != nil {
		return err
	}
	// The events posted after the kill: time from the post to their last
	// subscriber on each survivor. Before the views drop the victim
	// (its TTL), each waits cluster_read_timeout for results that do not
	// come, then reads itself.
	var worst time.Duration
	var lats []time.Duration
	mu.Lock()
	for _, id := range pub.ackedOf(coll) {
		sent := pub.sentAt(id)
		if sent.Before(killedAt) {
			continue
		}
		for _, i := range survivors {
			if at, ok := latest[i][id]; ok {
				d := at.Sub(sent)
				lats = append(lats, d)
				worst = max(worst, d)
			}
		}
	}
	mu.Unlock()
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	p50 := time.Duration(0)
	if len(lats) > 0 {
		p50 = lats[len(lats)/2]
	}
	c.rep.target("cluster", "reader SIGKILLed: its reads taken over within 1 s (webhook → last subscriber, worst event after the kill)", fmt.Sprintf("worst %s, p50 %s, %d deliveries", worst.Round(time.Millisecond), p50.Round(time.Millisecond), len(lats)), worst <= time.Second && len(lats) > 0)
	takeovers := 0.0
	for _, i := range survivors {
		takeovers += procs[i].metric("broker_cluster_takeovers_total")
	}
	c.log("cluster: %.0f takeovers on the survivors", takeovers)
	c.mustAccount("cluster", reckonAll(alive, pub), procs[survivors[0]], procs[survivors[1]])
	after, _, err := steady(20, alive)
	if err != nil {
		return err
	}
	c.rep.must("cluster", "after the kill, two instances: Directus reads per event, whole cluster", fmt.Sprintf("%.2f", after), after <= 1.0)
	return nil
}
