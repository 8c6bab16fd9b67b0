package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"
)

// redisOutage: two instances share a Redis, which is killed and comes back
// empty, while events are posted to one instance and subscribers listen on
// both.
func (c *chaos) redisOutage(ctx context.Context) error {
	const coll = "chaos_redis"
	// Few users: this is about Redis, and every user is a read group (a
	// Directus read per event each) on both instances.
	w, err := newWorld(ctx, c.dx, "redis", coll, 50, max(2, c.sz.users/4))
	if err != nil {
		return err
	}
	r, err := redistest.Start(ctx)
	if err != nil {
		return fmt.Errorf("starting Redis: %w", err)
	}
	defer func() { _ = r.Stop() }()
	env := []string{"BUS=redis", "REDIS_URL=" + r.URL}
	a, err := c.startBroker(ctx, env...)
	if err != nil {
		return err
	}
	defer func() { _ = a.terminate(20 * time.Second) }()
	b, err := c.startBroker(ctx, env...)
	if err != nil {
		return err
	}
	defer func() { _ = b.terminate(20 * time.Second) }()
	onA, err := connectAll(ctx, a.wsURL(), w.users, max(1, c.sz.perUser*2), coll, nil)
	if err != nil {
		return err
	}
	defer closeAll(onA)
	onB, err := connectAll(ctx, b.wsURL(), w.users, max(1, c.sz.perUser*2), coll, nil)
	if err != nil {
		return err
	}
	defer closeAll(onB)
	pub := newPublisher(a.webhookURL(), true)
	pctx, stopPub := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { pub.run(pctx, c.sz.rate, []string{coll}, w.keys); close(done) }()
	defer func() { stopPub(); <-done }()
	if err := wait(ctx, 2*time.Second); err != nil {
		return err
	}
	c.log("killing Redis")
	if err := r.Shutdown(ctx); err != nil {
		return err
	}
	if err := wait(ctx, c.sz.outage/2); err != nil {
		return err
	}
	acked := pub.ackedOf(coll)
	_, err = subscribe(ctx, b.wsURL(), w.users[0], coll, acked[len(acked)-1], nil, nil)
	c.rep.must("redis", "a resume during the outage is refused, naming its subscription", fmt.Sprint(err), err != nil && strings.Contains(err.Error(), "(503) uid=s"))
	if err := wait(ctx, c.sz.outage/2); err != nil {
		return err
	}
	if err := r.Restart(ctx); err != nil {
		return fmt.Errorf("restarting Redis: %w", err)
	}
	c.log("Redis is back (empty)")
	if err := wait(ctx, 5*time.Second); err != nil {
		return err
	}
	stopPub()
	<-done
	if err := flush(ctx, pub, coll, w.keys[coll][0], append(onA, onB...)); err != nil {
		la, lb, ld := a.log.String(), b.log.String(), c.dx.Log()
		c.log("instance A log:\n%s\ninstance B log:\n%s\nDirectus log:\n%s", la[max(0, len(la)-3000):], lb[max(0, len(lb)-3000):], ld[max(0, len(ld)-5000):])
		return err
	}
	pub.mu.Lock()
	refused := pub.refused[503]
	pub.mu.Unlock()
	c.rep.must("redis", "the webhook refuses (503) what it cannot publish", fmt.Sprintf("%d calls answered 503", refused), refused > 0)
	c.mustAccount("redis", reckonAll(append(onA, onB...), pub), a, b)
	return nil
}
