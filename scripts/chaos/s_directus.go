package main

import (
	"context"
	"fmt"
	"time"
)

// directusOutage: Directus is killed and restarted under a steady stream
// of events to subscribers with their own tokens.
func (c *chaos) directusOutage(ctx context.Context) error {
	const coll = "chaos_outage"
	w, err := newWorld(ctx, c.dx, "outage", coll, 50, c.sz.users)
	if err != nil {
		return err
	}
	b, err := c.startBroker(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = b.terminate(20 * time.Second) }()
	subs, err := connectAll(ctx, b.wsURL(), w.users, c.sz.perUser, coll, nil)
	if err != nil {
		return err
	}
	defer closeAll(subs)
	pub := newPublisher(b.webhookURL(), true)
	pctx, stopPub := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { pub.run(pctx, c.sz.rate, []string{coll}, w.keys); close(done) }()
	defer func() { stopPub(); <-done }()

	if err := wait(ctx, 2*time.Second); err != nil {
		return err
	}
	c.log("killing Directus (%d subscribers, %d events/s)", len(subs), c.sz.rate)
	if err := c.dx.Kill(ctx); err != nil {
		return err
	}
	if err := wait(ctx, c.sz.outage); err != nil {
		return err
	}
	if err := c.dx.Restart(ctx); err != nil {
		return fmt.Errorf("restarting Directus: %w", err)
	}
	back := time.Now()
	c.log("Directus is back")
	if err := wait(ctx, 8*time.Second); err != nil {
		return err
	}
	stopPub()
	<-done
	if err := flush(ctx, pub, coll, w.keys[coll][0], subs); err != nil {
		return err
	}
	// Live again: the first event posted after Directus answered again that
	// reached every subscriber, and when its last copy arrived.
	live := time.Duration(-1)
	for _, id := range pub.ackedOf(coll) {
		if pub.sentAt(id).Before(back) {
			continue
		}
		var last time.Time
		all := true
		for _, s := range subs {
			s.mu.Lock()
			at, ok := s.got[id]
			s.mu.Unlock()
			if !ok {
				all = false
				break
			}
			if at.After(last) {
				last = at
			}
		}
		if all {
			live = last.Sub(back)
			break
		}
	}
	c.mustAccount("directus", reckonAll(subs, pub), b)
	missed := b.metric("broker_events_missed_total")
	c.rep.must("directus", "events missed while Directus was down were reported", fmt.Sprintf("%.0f subscriber-events (broker_events_missed_total)", missed), missed > 0)
	c.rep.target("directus", "live again after Directus returns (≤ 5 s)", fmt.Sprintf("%.2f s", live.Seconds()), live >= 0 && live <= 5*time.Second)
	return nil
}
