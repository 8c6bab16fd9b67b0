package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// access: the two measured checks of issue 19, with the subscribers of one
// role sharing one read through a service token made exactly as
// `flow install --create-service-token` makes it (never the admin token:
// that would read everything, and prove nothing of the least-privilege
// user's rereads).
func (c *chaos) access(ctx context.Context) error {
	const coll = "chaos_access"
	// At most 50 connections a user (max_connections_per_user is 64).
	w, err := newWorld(ctx, c.dx, "access", coll, 50, max(c.sz.users, c.sz.backlogSubs/50))
	if err != nil {
		return err
	}
	// The sign-ups are real users, created before the measurement so that
	// Directus's own work of creating them does not weigh on the item reads
	// being timed; the broker then gets the events their Flow would post.
	signups, err := createUsers(ctx, c.dx, "access-signup", w.role, c.sz.signups*int(c.sz.signupPhase/time.Second)*11/10)
	if err != nil {
		return err
	}
	// After the collection exists: the service policy grants its schema.
	client, err := directus.NewClient(c.dx.URL, time.Minute)
	if err != nil {
		return err
	}
	service, err := flow.EnsureServiceUser(ctx, client, c.dx.AdminToken)
	if err != nil {
		return fmt.Errorf("service user: %w", err)
	}
	if err := c.sigtermDuringReread(ctx, w, coll, service); err != nil {
		c.log("access: %s failed: %v", partReread, err)
		c.rep.must("access", partReread+": scenario ran", err.Error(), false)
	}
	return c.signupsBeside(ctx, w, coll, service, signups)
}

const (
	partReread  = "SIGTERM during an access-change reread"
	partSignups = "sign-ups beside item events"
)

// sigtermDuringReread: item events stream to subscribers of one class, an
// access event orders a reread of the permission model, the proxy holds
// the reread's requests (those made with the service token) longer than
// shutdown_timeout, and SIGTERM comes while it is held. The events behind
// the change wait for its regroup: the shutdown must cut the reread short
// and report them.
func (c *chaos) sigtermDuringReread(ctx context.Context, w *world, coll, service string) error {
	perm, err := permissionOf(ctx, c.dx, w.role, coll)
	if err != nil {
		return err
	}
	slow, err := newSlowDirectus(c.dx.URL, madeWith(service))
	if err != nil {
		return err
	}
	defer slow.close()
	shutdown := c.sz.shutdown
	b, err := c.startBroker(ctx, "DIRECTUS_URL="+slow.URL, "DIRECTUS_SERVICE_TOKEN="+service, fmt.Sprintf("SHUTDOWN_TIMEOUT=%s", shutdown))
	if err != nil {
		return err
	}
	defer b.kill()
	subs, err := connectAll(ctx, b.wsURL(), w.users, c.sz.backlogSubs/len(w.users), coll, nil)
	if err != nil {
		return err
	}
	defer closeAll(subs)
	c.mustShare(partReread, b, len(subs))
	pub := newPublisher(b.webhookURL(), false)
	if err := flush(ctx, pub, coll, w.keys[coll][0], subs); err != nil {
		return err
	}
	pctx, stopPub := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { pub.run(pctx, c.sz.rate, []string{coll}, w.keys); close(done) }()
	defer func() { stopPub(); <-done }()

	// A steady stream first: the change lands among events in flight.
	if err := until(ctx, 10*time.Second, func() bool { return len(pub.ackedOf(coll)) > max(1, c.sz.rate/2) }); err != nil {
		return fmt.Errorf("waiting for the item events: %w", err)
	}
	slow.delay.Store(int64(3 * shutdown))
	// What the Flow posts for an edit of the role's read permission: a
	// change of permissions rereads the whole model.
	body := fmt.Sprintf(`{"event":"permissions.update","payload":{"permissions":{}},"keys":[%q],"collection":"directus_permissions"}`, perm)
	if _, err := pub.postBody(ctx, "directus_permissions", body); err != nil {
		return fmt.Errorf("the access event: %w", err)
	}
	after := len(pub.ackedOf(coll))
	// The reread is in progress (the proxy holds a request of it) and item
	// events have queued behind the change for half a second.
	if err := until(ctx, 10*time.Second, func() bool {
		return slow.held.Load() > 0 && len(pub.ackedOf(coll)) >= after+max(1, c.sz.rate/2)
	}); err != nil {
		return fmt.Errorf("waiting for the reread and events behind it: %w (%d service-token requests held)", err, slow.held.Load())
	}
	held := slow.held.Load()
	c.log("SIGTERM during the reread: %d of its requests held, %d item events acknowledged (%d after the change)",
		held, len(pub.ackedOf(coll)), len(pub.ackedOf(coll))-after)
	start := time.Now()
	if err := b.terminate(shutdown + 10*time.Second); err != nil {
		return err
	}
	took := time.Since(start)
	stopPub()
	<-done
	for _, s := range subs {
		<-s.closed
	}
	c.mustAccountOf("access", partReread, reckonAll(subs, pub), b)
	codes := map[int]int{}
	for _, s := range subs {
		codes[s.closeCode]++
	}
	c.rep.must("access", partReread+": every client closed with 1001", fmt.Sprint(codes), codes[websocket.CloseGoingAway] == len(subs))
	cut := "the reread was cut short"
	if !strings.Contains(b.log.String(), "access change: reread failed") {
		cut = "no sign in the log that the reread was cut short"
	}
	c.rep.must("access", partReread+": exit within shutdown_timeout (+1 s)",
		fmt.Sprintf("%.2f s (shutdown_timeout %s; %d reread requests held at SIGTERM, %s)", took.Seconds(), shutdown, held, cut), took <= shutdown+time.Second)
	return nil
}

// signupsBeside times item events (webhook POST → the frame at each
// subscriber) at rate, alone and then beside users.create events at the
// sign-up rate. A sign-up concerns no subscription (its user has no token
// in use): the broker is meant to apply it without holding delivery
// (broker.Forgetter), so the item events should not notice.
func (c *chaos) signupsBeside(ctx context.Context, w *world, coll, service string, signups []string) error {
	b, err := c.startBroker(ctx, "DIRECTUS_SERVICE_TOKEN="+service)
	if err != nil {
		return err
	}
	defer func() { _ = b.terminate(20 * time.Second) }()
	subs, err := connectAll(ctx, b.wsURL(), w.users, c.sz.backlogSubs/len(w.users), coll, nil)
	if err != nil {
		return err
	}
	defer closeAll(subs)
	c.mustShare(partSignups, b, len(subs))
	pub := newPublisher(b.webhookURL(), true)
	signPub := newPublisher(b.webhookURL(), true)
	key := w.keys[coll][0]
	if err := flush(ctx, pub, coll, key, subs); err != nil { // warm up
		return err
	}
	var signed atomic.Int64
	// phase posts item events at rate for signupPhase (beside sign-ups when
	// asked) and waits until every subscriber has had them. It returns the
	// latency of each frame, how many events were acknowledged, how busy
	// the machine was, and how long the subscribers took to catch up after
	// the last post.
	phase := func(withSignups bool) (lat []time.Duration, events int, how string, caughtUp time.Duration, err error) {
		from := len(pub.ackedOf(coll))
		cpu0 := b.cpuTimes()
		end := time.Now().Add(c.sz.signupPhase)
		keys := w.keys[coll]
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			pace(ctx, end, c.sz.rate, 0, func(i int) { _, _ = pub.post(ctx, coll, keys[i%len(keys)]) })
		}()
		if withSignups {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pace(ctx, end, c.sz.signups, len(signups), func(i int) {
					if signUp(ctx, signPub, i, signups[i], w.role) {
						signed.Add(1)
					}
				})
			}()
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return nil, 0, "", 0, err
		}
		cpu := busy(cpu0, b.cpuTimes())
		ids := pub.ackedOf(coll)[from:]
		posted := time.Now()
		if err := flush(ctx, pub, coll, key, subs); err != nil {
			return nil, 0, "", 0, err
		}
		caughtUp = time.Since(posted)
		cpu += fmt.Sprintf("; caught up %.1f s after the last post", caughtUp.Seconds())
		for _, id := range ids {
			sent := pub.sentAt(id)
			for _, s := range subs {
				s.mu.Lock()
				at, ok := s.got[id]
				s.mu.Unlock()
				if ok {
					lat = append(lat, at.Sub(sent))
				}
			}
		}
		if len(lat) == 0 {
			return nil, 0, "", 0, errors.New("no item event reached a subscriber")
		}
		return lat, len(ids), cpu, caughtUp, nil
	}
	c.log("access: item events alone (%d subscribers, %d/s)", len(subs), c.sz.rate)
	alone, n, cpu, caughtUp, err := phase(false)
	if err != nil {
		return err
	}
	// On a machine that cannot carry the fan-out (the broker and these
	// clients share its cores) a backlog builds up: the latencies are then
	// the queue's, and the comparison below says little.
	c.rep.target("access", partSignups+": item events alone: p50 / p99; the machine keeps up (caught up ≤ 1 s after the last post)",
		fmt.Sprintf("%.1f / %.1f ms (%d events, %d frames; %s)", ms(p50(alone)), ms(p99(alone)), n, len(alone), cpu), caughtUp <= time.Second)

	changes0, regrouped0, apart0 := b.metric("broker_access_changes_total"), b.metric("broker_regrouped_total"), b.metric("broker_apart_reads_total")
	reads0 := b.metric("broker_reads_total")
	c.log("access: item events beside %d sign-ups/s", c.sz.signups)
	beside, n, cpu, _, err := phase(true)
	if err != nil {
		return err
	}
	signPub.mu.Lock()
	refused := fmt.Sprint(signPub.refused)
	signPub.mu.Unlock()
	what := fmt.Sprintf("%s; %d sign-ups acknowledged (refused %s); broker: %.0f access changes applied, %.0f regrouped, %.0f reads apart, %.2f reads per event",
		cpu, signed.Load(), refused, b.metric("broker_access_changes_total")-changes0, b.metric("broker_regrouped_total")-regrouped0,
		b.metric("broker_apart_reads_total")-apart0, (b.metric("broker_reads_total")-reads0)/float64(max(n, 1)))
	c.log("access: %s", what)
	if signed.Load() == 0 {
		return fmt.Errorf("no sign-up was acknowledged: %s", what)
	}
	c.rep.target("access", fmt.Sprintf("%s: beside %d sign-ups/s: p99 ≤ 1.5× alone", partSignups, c.sz.signups),
		fmt.Sprintf("%.1f ms (alone %.1f ms; p50 %.1f ms; %d events, %d frames); %s", ms(p99(beside)), ms(p99(alone)), ms(p50(beside)), n, len(beside), what),
		p99(beside) <= p99(alone)*3/2)
	c.mustAccountOf("access", partSignups, reckonAll(subs, pub), b)
	return nil
}

// pace calls fn(0), fn(1)... each in its own goroutine, rate a second on
// a fixed schedule (a slow answer delays no later call: the load does not
// ease when the broker slows), until end, ctx's end or n calls (0: no
// bound); it returns once every call returned.
func pace(ctx context.Context, end time.Time, rate, n int, fn func(i int)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	for i := 0; n == 0 || i < n; {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		for due := int(now.Sub(start).Seconds() * float64(rate)); i < due && (n == 0 || i < n); i++ {
			wg.Add(1)
			go func() { defer wg.Done(); fn(i) }()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// signUp posts the users.create event of the i-th sign-up, user id, as the
// Flow posts it (the broker drops the payload of system collections), and
// reports whether the broker acknowledged it.
func signUp(ctx context.Context, pub *publisher, i int, id, role string) bool {
	body := fmt.Sprintf(`{"event":"users.create","payload":{"email":"access-signup-%d@chaos.example.com","role":%q,"status":"active"},"key":%q,"collection":"directus_users"}`, i, role, id)
	_, err := pub.postBody(ctx, "directus_users", body)
	return err == nil
}

// mustShare checks the premise of the access scenario: with the service
// token, the n subscribers of one role and query share one read group.
func (c *chaos) mustShare(part string, b *brokerProc, n int) {
	groups, attached := b.metric("broker_groups"), b.metric("broker_subscriptions")
	c.rep.must("access", part+": the subscribers of one role share one read (service token)",
		fmt.Sprintf("%.0f read groups for %.0f subscriptions", groups, attached), groups == 1 && attached == float64(n))
}

// createUsers creates n active users of role, named after name, without
// tokens (nobody connects as them), and returns their ids.
func createUsers(ctx context.Context, dx *directustest.Instance, name, role string, n int) ([]string, error) {
	var ids []string
	for len(ids) < n {
		var batch []map[string]any
		for i := len(ids); i < min(n, len(ids)+250); i++ {
			batch = append(batch, map[string]any{"email": fmt.Sprintf("%s-%d@chaos.example.com", name, i), "role": role, "status": "active"})
		}
		var out struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/users?fields=id", batch, &out); err != nil {
			return nil, fmt.Errorf("users %s: %w", name, err)
		}
		if len(out.Data) != len(batch) {
			return nil, fmt.Errorf("users %s: %d created of %d", name, len(out.Data), len(batch))
		}
		for _, d := range out.Data {
			ids = append(ids, d.ID)
		}
	}
	return ids, nil
}

// permissionOf is the id of role's read permission on coll.
func permissionOf(ctx context.Context, dx *directustest.Instance, role, coll string) (string, error) {
	var access struct {
		Data []struct {
			Policy string `json:"policy"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodGet, "/access?"+url.Values{"filter[role][_eq]": {role}, "fields": {"policy"}}.Encode(), nil, &access); err != nil {
		return "", fmt.Errorf("the role's policies: %w", err)
	}
	for _, a := range access.Data {
		var perms struct {
			Data []struct {
				ID json.Number `json:"id"`
			} `json:"data"`
		}
		q := url.Values{"filter[policy][_eq]": {a.Policy}, "filter[collection][_eq]": {coll}, "filter[action][_eq]": {"read"}, "fields": {"id"}}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodGet, "/permissions?"+q.Encode(), nil, &perms); err != nil {
			return "", fmt.Errorf("the role's permissions: %w", err)
		}
		if len(perms.Data) > 0 {
			return perms.Data[0].ID.String(), nil
		}
	}
	return "", fmt.Errorf("no read permission of the role on %s", coll)
}
