package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// connectAll subscribes perUser connections of every token to collection.
func connectAll(ctx context.Context, url string, tokens []string, perUser int, collection string, onEvent func(string, time.Time)) ([]*subscriber, error) {
	subs := make([]*subscriber, len(tokens)*perUser)
	var wg sync.WaitGroup
	errs := make(chan error, len(subs))
	sem := make(chan struct{}, 16)
	for i := range subs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			s, err := subscribe(ctx, url, tokens[i%len(tokens)], collection, "", nil, onEvent)
			if err != nil {
				errs <- fmt.Errorf("subscriber %d: %w", i, err)
				return
			}
			subs[i] = s
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		closeAll(subs)
		return nil, err
	}
	return subs, nil
}

func closeAll(subs []*subscriber) {
	for _, s := range subs {
		if s != nil {
			s.close()
		}
	}
}

// reckonAll accounts every subscriber against the events acknowledged for
// its collection.
func reckonAll(subs []*subscriber, pub *publisher) account {
	var accounts []account
	for _, s := range subs {
		accounts = append(accounts, s.reckon(pub.ackedOf(s.collection)))
	}
	return total(accounts)
}

// mustAccount reports the accounting of scenario: nothing lost, nothing
// twice; on a loss the brokers' logs are shown.
func (c *chaos) mustAccount(scenario string, a account, brokers ...*brokerProc) {
	c.mustAccountOf(scenario, "", a, brokers...)
}

// mustAccountOf is mustAccount for one part of a scenario with several:
// its checks are named after part.
func (c *chaos) mustAccountOf(scenario, part string, a account, brokers ...*brokerProc) {
	label := scenario
	if part != "" {
		label, part = scenario+" ("+part+")", part+": "
	}
	c.log("%s: %s", label, a)
	if a.lost > 0 || a.dups > 0 {
		for _, b := range brokers {
			l := b.log.String()
			c.log("broker log (end):\n%s", l[max(0, len(l)-4000):])
		}
	}
	c.rep.must(scenario, part+"every acknowledged event delivered or reported", a.String(), a.lost == 0 && a.acked > 0)
	c.rep.must(scenario, part+"no event delivered twice", fmt.Sprint(a.dups), a.dups == 0)
}

// wait pauses for d unless ctx ends first.
func wait(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// until polls cond until it holds; an error when limit passes or ctx ends
// first.
func until(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", limit)
		}
		if err := wait(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// flush posts one more event to collection and waits until it reached
// every subscriber of subs: events of a collection reach each subscriber in
// order, so then every earlier one has been delivered or reported. The
// marker is accounted like any other event.
func flush(ctx context.Context, pub *publisher, collection string, key int, subs []*subscriber) error {
	var id string
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for id == "" {
		if id, err = pub.post(ctx, collection, key); err != nil && time.Now().After(deadline) {
			return fmt.Errorf("flush: %w", err)
		}
		if id == "" {
			if err := wait(ctx, 100*time.Millisecond); err != nil {
				return err
			}
		}
	}
	for _, s := range subs {
		for {
			s.mu.Lock()
			_, ok := s.got[id]
			s.mu.Unlock()
			if ok {
				break
			}
			if time.Now().After(deadline) {
				missing := 0
				for _, s := range subs {
					s.mu.Lock()
					if _, ok := s.got[id]; !ok {
						missing++
					}
					s.mu.Unlock()
				}
				return fmt.Errorf("flush: event %s did not reach %d of %d subscribers within 30s", id, missing, len(subs))
			}
			if err := wait(ctx, 20*time.Millisecond); err != nil {
				return err
			}
		}
	}
	return nil
}
