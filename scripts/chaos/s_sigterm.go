package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// sigtermBacklog: reads take longer than shutdown_timeout while events keep
// coming; then SIGTERM.
func (c *chaos) sigtermBacklog(ctx context.Context) error {
	const coll = "chaos_sigterm"
	// At most 50 connections a user (max_connections_per_user is 64).
	w, err := newWorld(ctx, c.dx, "sigterm", coll, 50, max(c.sz.users, c.sz.backlogSubs/50))
	if err != nil {
		return err
	}
	slow, err := newSlowDirectus(c.dx.URL, itemReads)
	if err != nil {
		return err
	}
	defer slow.close()
	shutdown := c.sz.shutdown
	b, err := c.startBroker(ctx, "DIRECTUS_URL="+slow.URL, fmt.Sprintf("SHUTDOWN_TIMEOUT=%s", shutdown))
	if err != nil {
		return err
	}
	defer b.kill()
	subs, err := connectAll(ctx, b.wsURL(), w.users, c.sz.backlogSubs/len(w.users), coll, nil)
	if err != nil {
		return err
	}
	defer closeAll(subs)
	// Delivered before the reads slow down, then a backlog.
	pub := newPublisher(b.webhookURL(), false)
	for i := range 5 {
		if _, err := pub.post(ctx, coll, w.keys[coll][i]); err != nil {
			return err
		}
	}
	if !b.settle(20 * time.Second) {
		return errors.New("the first events were not delivered")
	}
	slow.delay.Store(int64(3 * shutdown))
	pctx, stopPub := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; pctx.Err() == nil; i += 4 {
				if _, err := pub.post(pctx, coll, w.keys[coll][i%50]); errors.Is(err, errRefused) {
					return // the listener is closed: nothing more is sent
				}
			}
		}()
	}
	if err := wait(ctx, time.Second); err != nil {
		stopPub()
		return err
	}
	c.log("SIGTERM with %d events acknowledged", len(pub.ackedOf(coll)))
	start := time.Now()
	if err := b.terminate(shutdown + 10*time.Second); err != nil {
		stopPub()
		return err
	}
	took := time.Since(start)
	stopPub()
	wg.Wait()
	for _, s := range subs {
		<-s.closed
	}
	c.mustAccount("sigterm", reckonAll(subs, pub), b)
	codes := map[int]int{}
	for _, s := range subs {
		codes[s.closeCode]++
	}
	c.rep.must("sigterm", "every client closed with 1001", fmt.Sprint(codes), codes[websocket.CloseGoingAway] == len(subs))
	atClose, unanswered := pub.unansweredCalls()
	pub.mu.Lock()
	detail := fmt.Sprintf("%d unanswered; %d reset as the listener closed (never accepted); refusals by status %v", unanswered, atClose, pub.refused)
	if pub.lastErr != nil {
		detail += "; last: " + pub.lastErr.Error()
	}
	pub.mu.Unlock()
	c.rep.must("sigterm", "every webhook call the broker accepted got an answer", detail, unanswered == 0)
	c.rep.must("sigterm", "exit within shutdown_timeout (+1 s)", fmt.Sprintf("%.2f s (shutdown_timeout %s)", took.Seconds(), shutdown), took <= shutdown+time.Second)
	return nil
}
