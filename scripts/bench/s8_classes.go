package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// classes is scenario 8 (issue 10): subscribers who each have their own
// token, as in a frontend app, on a real Directus 11.17.4 (custom rules
// need 11) — reads follow distinct access, not users.
//
//   - 1,000 users of one role (full read): webhook → last subscriber and
//     reads per event, first with a broker without a service token (one
//     read per user: the behaviour before access classes), then with one;
//     then a REST write → last subscriber of the broker and of Directus's
//     own realtime, the same users connected to both.
//   - 10,000 subscribers of 10,000 users in 10 roles (5 with full read, 5
//     with an item rule): webhook → last, reads per event.
//   - 1,000 users with an owner rule: reads per event, webhook → the owner.
//   - 1,000 users in 20 teams (team = $CURRENT_USER.bench_team): reads per
//     event, webhook → the last member of the item's team.
//   - 1,000 users in 40 organizations of 20 tiers (team =
//     $CURRENT_USER.bench_org.tier, a field of the user's related item):
//     the same, to the last user of the item's tier.
//   - a reconnect storm: 10,000 subscribers of 1,000 users in 10 roles
//     connect and subscribe at once to a fresh broker: the time until all
//     are subscribed and every call the broker made to Directus (counted by
//     the stub, a proxy in front of Directus here).
func (b *bench) classes(ctx context.Context) error {
	const scen = "8"
	if b.opts.noDirectus {
		b.rep.skip(scen, "access classes", "no Directus (-no-directus)")
		return nil
	}
	sz := b.sz
	b.log.printf("  starting Directus 11.17.4 (WEBSOCKETS_ENABLED=true)")
	dx, err := directustest.Start(ctx, directustest.Options{Version: "11.17.4", Env: map[string]string{"WEBSOCKETS_ENABLED": "true"}})
	if err != nil {
		return fmt.Errorf("starting Directus 11.17.4: %w", err)
	}
	defer dx.Stop()
	w, err := newClassWorld(ctx, dx, sz.classUsers*sz.classRoles, sz.classRoles, sz.classUsers, sz.classEvents*4+5*(sz.classWrites+1)+8, sz.classBeforeEvents+1)
	if err != nil {
		return err
	}
	b.log.printf("  %d users in %d roles and %d owner-rule users created", len(w.users), sz.classRoles, len(w.owners))
	client, _ := directus.NewClient(dx.URL, time.Minute)
	service, err := flow.EnsureServiceUser(ctx, client, dx.AdminToken)
	if err != nil {
		return fmt.Errorf("service user: %w", err)
	}
	startRig := func(withService bool) (*rig, error) {
		// Connecting is not what these cases time: token checks unpaced
		// (the storms below time it, paced and not).
		env := []string{"TOKEN_CACHE_TTL=1h", "TOKEN_CHECK_RATE=0", "GRAPHQL_ENABLED=true"}
		if withService {
			env = append(env, "DIRECTUS_SERVICE_TOKEN="+service)
		}
		return b.startRig(ctx, []string{"-upstream", dx.URL, "-proxy-all"}, env...)
	}
	tr := newTracker(w.first, w.keys)
	next := w.first
	// fanout times events posted to the webhook, one at a time, to the
	// want subscribers that may see them; it returns the latencies and the
	// broker's reads per event.
	fanout := func(r *rig, want, events int, label string) ([]float64, float64, error) {
		p := newPoster(r.webhookURL(), true, 1)
		defer p.close()
		reads0, _ := r.metric("broker_reads_total")
		var lats []float64
		for i := range events + 1 {
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
				return nil, 0, fmt.Errorf("%s: %d of %d subscribers got the event", label, got, wnt)
			}
			if i > 0 { // the first warms caches
				lats = append(lats, ms(d))
			}
		}
		reads1, _ := r.metric("broker_reads_total")
		b.log.printf("  %s: median %.1f ms, %.1f reads per event", label, median(lats), (reads1-reads0)/float64(events+1))
		return lats, (reads1 - reads0) / float64(events+1), nil
	}
	N := thousands(sz.classUsers)
	oneRole := func(i int) string { return w.users[i*sz.classRoles].token } // users of role 0
	if b.opts.graphqlOnly {
		r, err := startRig(true)
		if err != nil {
			return err
		}
		defer r.stop()
		if err := b.installClassFlow(ctx, dx, r); err != nil {
			return err
		}
		return b.graphQLCase(ctx, dx, r, w, oneRole, &next)
	}

	// Before: no service token, one read per user and event.
	r, err := startRig(false)
	if err != nil {
		return err
	}
	pool := newPool(r.wsURL(), "", brokerProtocol, tr)
	pool.tokenOf = oneRole
	start := time.Now()
	if err := pool.grow(ctx, sz.classUsers, 64, func(int) string { return w.coll }); err != nil {
		pool.close()
		r.stop()
		return err
	}
	b.log.printf("  %d users subscribed (no service token) in %.1fs", sz.classUsers, time.Since(start).Seconds())
	lats, reads, err := fanout(r, sz.classUsers, sz.classBeforeEvents, "no service token")
	pool.close()
	r.stop()
	if err != nil {
		return err
	}
	b.rep.add(scen, fmt.Sprintf("webhook → last of %s users of 1 role, no service token (one read per user)", N), "ms", nil, lats...)
	b.rep.add(scen, "  reads per event, no service token", "reads", nil, reads)

	// After: the same users with access classes.
	if r, err = startRig(true); err != nil {
		return err
	}
	defer func() { r.stop() }()
	pool = newPool(r.wsURL(), "", brokerProtocol, tr)
	pool.tokenOf = oneRole
	start = time.Now()
	if err := pool.grow(ctx, sz.classUsers, 64, func(int) string { return w.coll }); err != nil {
		pool.close()
		return err
	}
	b.log.printf("  %d users subscribed (service token) in %.1fs", sz.classUsers, time.Since(start).Seconds())
	if lats, reads, err = fanout(r, sz.classUsers, sz.classEvents, "1 role, classes"); err != nil {
		pool.close()
		return err
	}
	b.rep.add(scen, fmt.Sprintf("webhook → last of %s users of 1 role (full read), Directus read included", N), "ms", atMost(60), lats...)
	b.rep.add(scen, "  reads per event", "reads", atMost(1), reads)

	// The same users on Directus's own realtime, the same REST writes.
	if err := b.installClassFlow(ctx, dx, r); err != nil {
		pool.close()
		return err
	}
	trD := tr.sibling()
	pD := newPool(strings.Replace(dx.URL, "http://", "ws://", 1)+"/websocket", "", directusProtocol(""), trD)
	pD.tokenOf = oneRole
	start = time.Now()
	if err := pD.grow(ctx, sz.classUsers, 16, func(int) string { return w.coll }); err != nil {
		pD.close()
		pool.close()
		return fmt.Errorf("subscribing to Directus realtime: %w", err)
	}
	b.log.printf("  %d users subscribed to Directus realtime in %.1fs", sz.classUsers, time.Since(start).Seconds())
	var brokerMs, dxMs []float64
	for i := range sz.classWrites + 1 {
		key := next
		next++
		tr.arm(key, sz.classUsers)
		trD.arm(key, sz.classUsers)
		at := tr.now()
		tr.markSent(key, at)
		trD.markSent(key, at)
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/items/"+w.coll+"/"+strconv.Itoa(key), map[string]any{"title": "write " + strconv.Itoa(i)}, nil); err != nil {
			pD.close()
			pool.close()
			return err
		}
		bt, okB := tr.wait(key, 2*time.Minute)
		dt, okD := trD.wait(key, 2*time.Minute)
		if !okB || !okD {
			pD.close()
			pool.close()
			return fmt.Errorf("REST write %d: not every subscriber got it (broker %v, Directus %v)", i, okB, okD)
		}
		if i > 0 {
			brokerMs = append(brokerMs, ms(bt))
			dxMs = append(dxMs, ms(dt))
			b.log.printf("  REST write %d: broker %.1f ms, Directus realtime %.1f ms", i, ms(bt), ms(dt))
		}
	}
	pD.close()
	pool.close()
	b.rep.add(scen, fmt.Sprintf("REST write → last of %s users, broker (Flow → webhook → 1 read → fan-out)", N), "ms", nil, brokerMs...)
	b.rep.add(scen, fmt.Sprintf("REST write → last of the same %s users on Directus's own realtime", N), "ms", nil, dxMs...)
	b.rep.add(scen, "  Directus realtime ÷ broker", "×", atLeast(20), median(dxMs)/median(brokerMs))
	if err := b.graphQLCase(ctx, dx, r, w, oneRole, &next); err != nil {
		return err
	}

	// 10,000 subscribers of 10,000 users in 10 roles.
	all := newPool(r.wsURL(), "", brokerProtocol, tr)
	all.tokenOf = func(i int) string { return w.users[i].token }
	start = time.Now()
	if err := all.grow(ctx, len(w.users), 128, func(int) string { return w.coll }); err != nil {
		all.close()
		return err
	}
	b.log.printf("  %d users subscribed in %.1fs", len(w.users), time.Since(start).Seconds())
	lats, reads, err = fanout(r, len(w.users), sz.classEvents, "10 roles")
	all.close()
	if err != nil {
		return err
	}
	M := thousands(len(w.users))
	b.rep.add(scen, fmt.Sprintf("webhook → last of %s subs of %s users in %d roles (half with an item rule)", M, M, sz.classRoles), "ms", atMost(250), lats...)
	b.rep.add(scen, "  reads per event", "reads", atMost(float64(sz.classRoles)), reads)

	// The owner rule: a class per user; only the owner sees the items.
	trO := newTracker(w.ownFirst, w.ownKeys)
	owners := newPool(r.wsURL(), "", brokerProtocol, trO)
	owners.tokenOf = func(i int) string { return w.owners[i].token }
	if err := owners.grow(ctx, len(w.owners), 64, func(int) string { return w.ownColl }); err != nil {
		owners.close()
		return err
	}
	ownPoster := newPoster(r.webhookURL(), true, 1)
	reads0, _ := r.metric("broker_reads_total")
	if err := resetCounts(r); err != nil {
		owners.close()
		return err
	}
	var ownLats []float64
	for i := range w.ownKeys {
		key := w.ownFirst + i
		trO.arm(key, 1)
		trO.markSent(key, trO.now())
		if err := ownPoster.post(ctx, w.ownColl, key); err != nil {
			owners.close()
			return err
		}
		d, ok := trO.wait(key, 2*time.Minute)
		if !ok {
			owners.close()
			return fmt.Errorf("owner rule: the owner did not get the event")
		}
		if i > 0 {
			ownLats = append(ownLats, ms(d))
		}
		// The other users' reads of the event go on after the owner's:
		// let them end before the next event.
		if err := waitQuiet(ctx, r); err != nil {
			owners.close()
			return err
		}
	}
	reads1, _ := r.metric("broker_reads_total")
	owners.close()
	ownerReads := (reads1 - reads0) / float64(w.ownKeys)
	ownCalls, err := itemCalls(r)
	if err != nil {
		return err
	}
	b.log.printf("  owner rule: median %.1f ms to the owner, %.1f group reads and %.1f Directus item requests per event", median(ownLats), ownerReads, ownCalls/float64(w.ownKeys))
	b.rep.add(scen, fmt.Sprintf("owner rule, %s users: webhook → the owner (the only reader)", thousands(len(w.owners))), "ms", atMost(60), ownLats...)
	b.rep.add(scen, "  Directus item requests per event (the owner lookup and the owner's read)", "reads", atMost(2), ownCalls/float64(w.ownKeys))
	b.rep.add(scen, "  group reads per event (only the owner's class reads)", "reads", atMost(1), ownerReads)

	// The same owner-rule users on the broker and on Directus's own
	// realtime, REST writes of owners[0]'s items: time to the owner.
	// Directus checks its subscribers one after another in the order they
	// subscribed, so its time to the owner depends on where the owner is
	// in that order: first (it reaches the one reader at once) or last
	// (it reaches the last of the 1,000 subscribers, the target's case).
	// The broker's order does not matter.
	n := len(w.owners)
	for _, ownerLast := range []bool{false, true} {
		dOrder := func(i int) string { return w.owners[i].token }
		where := "subscribed first"
		if ownerLast {
			// owners[0] subscribes after every other one.
			dOrder = func(i int) string {
				if i == n-1 {
					return w.owners[0].token
				}
				return w.owners[i+1].token
			}
			where = "subscribed last"
		}
		bMs, dMs, err := b.ownerWrites(ctx, dx, r, w, dOrder, ownerLast)
		if err != nil {
			return err
		}
		b.log.printf("  owner rule, REST writes, the owner %s on Directus: broker %.1f ms, Directus realtime %.1f ms to the owner", where, median(bMs), median(dMs))
		b.rep.add(scen, fmt.Sprintf("owner rule, REST write → the owner, broker (%s owner-rule users subscribed)", thousands(n)), "ms", nil, bMs...)
		b.rep.add(scen, fmt.Sprintf("owner rule, REST write → the owner on Directus's own realtime, the owner %s", where), "ms", nil, dMs...)
		var target *target
		if ownerLast {
			target = atLeast(20)
		}
		b.rep.add(scen, fmt.Sprintf("  Directus realtime ÷ broker, owner rule, the owner %s", where), "×", target, median(dMs)/median(bMs))
	}

	// Teams: team = $CURRENT_USER.bench_team, users of one team share.
	if err := b.teamCase(ctx, r, w.team, fmt.Sprintf("team rule, %s users in %d teams", thousands(len(w.team.users)), w.team.teams), "team"); err != nil {
		return err
	}
	// Organizations: team = $CURRENT_USER.bench_org.tier, a field of the
	// user's organization (a many-to-one); users of one tier share.
	if err := b.teamCase(ctx, r, w.org, fmt.Sprintf("organization rule (a path), %s users in %d organizations of %d tiers", thousands(len(w.org.users)), 2*w.org.teams, w.org.teams), "tier"); err != nil {
		return err
	}
	r.stop()

	// The reconnect storms, each against a fresh broker (cold caches).
	return b.storms(ctx, dx, w, service, tr)
}

// stormResult is one reconnect storm: how long until every socket was
// subscribed, the Directus calls it made by kind, the dials told to come
// back later, and Directus's own API latency meanwhile.
type stormResult struct {
	took    time.Duration
	total   int
	parts   []string
	retried int64
	ping    []float64 // GET /server/ping, ms
	item    []float64 // GET /items/<coll>/<id> as admin, ms
}

// storms runs the reconnect storms of scenario 8: 10,000 sockets of 1,000
// users with static tokens, checked by Directus unpaced and paced
// (token_check_rate); one socket for each of the 10,000 users with an access
// JWT, verified with directus_secret; and the same JWT users on Directus's
// own realtime.
func (b *bench) storms(ctx context.Context, dx *directustest.Instance, w *classWorld, service string, tr *tracker) error {
	const scen = "8"
	sz := b.sz
	perUser := sz.stormSubs / sz.stormUsers
	static := func(i int) string { return w.users[i/perUser].token }
	S, U := thousands(sz.stormSubs), thousands(sz.stormUsers)
	report := func(label string, res stormResult) {
		b.log.printf("  %s: %.1fs; Directus calls %d: %s; %d dials told to come back; Directus meanwhile: ping p50 %.1f p99 %.1f ms, item read p50 %.1f p99 %.1f ms",
			label, res.took.Seconds(), res.total, strings.Join(res.parts, ", "), res.retried, median(res.ping), percentileMs(res.ping, 99), median(res.item), percentileMs(res.item, 99))
	}
	for _, paced := range []bool{false, true} {
		env := []string{"TOKEN_CACHE_TTL=1h", "DIRECTUS_SERVICE_TOKEN=" + service}
		label := "static tokens, token checks paced at token_check_rate (50/s)"
		if !paced {
			env = append(env, "TOKEN_CHECK_RATE=0")
			label = "static tokens, token checks unpaced"
		}
		res, err := b.storm(ctx, dx, w, env, sz.stormSubs, static, brokerProtocol, "")
		if err != nil {
			return fmt.Errorf("storm (%s): %w", label, err)
		}
		report("storm, "+label, res)
		if !paced {
			b.rep.add(scen, fmt.Sprintf("reconnect storm: %s subs of %s users in %d roles all subscribed (%s)", S, U, sz.classRoles, label), "s", atMost(15), res.took.Seconds())
			b.rep.add(scen, "  Directus calls made (users + classes × collections + a few)", "calls", atMost(float64(sz.stormUsers+sz.classRoles+20)), float64(res.total))
			b.rep.note(strings.Join(res.parts, "; "))
		} else {
			b.rep.add(scen, fmt.Sprintf("reconnect storm: the same (%s)", label), "s", nil, res.took.Seconds())
			b.rep.add(scen, "  dials answered 503 with Retry-After at their turn, and made again", "dials", nil, float64(res.retried))
		}
		b.rep.add(scen, "  Directus's GET /server/ping during the storm, p99", "ms", nil, percentileMs(res.ping, 99))
		b.rep.add(scen, "  Directus's item read (admin) during the storm, p99", "ms", nil, percentileMs(res.item, 99))
	}

	// Access JWTs: signed with the test Directus's SECRET, as Directus signs
	// its own (a few checked against Directus first).
	secret, err := dx.Secret()
	if err != nil {
		return err
	}
	signer := directus.NewJWTVerifier(secret)
	now := time.Now().Unix()
	jwts := make([]string, len(w.users))
	for i, u := range w.users {
		jwts[i] = signer.Sign(map[string]any{"id": u.id, "role": u.role, "app_access": false, "admin_access": false, "iat": now, "exp": now + 3600, "iss": "directus"})
	}
	for _, i := range []int{0, len(jwts) / 2, len(jwts) - 1} {
		var me struct {
			Data struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if _, err := dx.Do(ctx, jwts[i], http.MethodGet, "/users/me?fields=id", nil, &me); err != nil || me.Data.ID != w.users[i].id {
			return fmt.Errorf("a signed JWT of user %d: Directus answers %v (user %q)", i, err, me.Data.ID)
		}
	}
	N := thousands(len(jwts))
	jwtOf := func(i int) string { return jwts[i] }
	res, err := b.storm(ctx, dx, w, []string{"TOKEN_CACHE_TTL=1h", "DIRECTUS_SERVICE_TOKEN=" + service, "DIRECTUS_SECRET=" + secret}, len(jwts), jwtOf, brokerProtocol, "")
	if err != nil {
		return fmt.Errorf("JWT storm: %w", err)
	}
	report("JWT storm (directus_secret)", res)
	b.rep.add(scen, fmt.Sprintf("reconnect storm, access JWTs verified with the SECRET: %s subs of %s users, %d roles", N, N, sz.classRoles), "s", atMost(5), res.took.Seconds())
	b.rep.add(scen, "  Directus calls made (classes × collections + a few)", "calls", atMost(float64(sz.classRoles+20)), float64(res.total))
	b.rep.note(strings.Join(res.parts, "; "))
	b.rep.add(scen, "  Directus's GET /server/ping during the storm, p99", "ms", nil, percentileMs(res.ping, 99))

	res, err = b.storm(ctx, dx, w, nil, len(jwts), jwtOf, directusProtocol(""), strings.Replace(dx.URL, "http://", "ws://", 1)+"/websocket")
	if err != nil {
		return fmt.Errorf("JWT storm on Directus's realtime: %w", err)
	}
	report("JWT storm on Directus's own realtime", res)
	b.rep.add(scen, fmt.Sprintf("the same %s JWT users connecting at once to Directus's own realtime", N), "s", nil, res.took.Seconds())
	b.rep.add(scen, "  Directus's GET /server/ping during that storm, p99", "ms", nil, percentileMs(res.ping, 99))
	return b.mixedRoles(ctx, dx, w, service, secret, jwts)
}

// storm connects n sockets (token tokenOf(i)) at once and subscribes each
// to w.coll: through a fresh broker started with env, or straight to
// wsURL (Directus's realtime) when that is set; meanwhile it times
// Directus's own API.
func (b *bench) storm(ctx context.Context, dx *directustest.Instance, w *classWorld, env []string, n int, tokenOf func(int) string, proto protocol, wsURL string) (stormResult, error) {
	var res stormResult
	var r *rig
	if wsURL == "" {
		var err error
		if r, err = b.startRig(ctx, []string{"-upstream", dx.URL, "-proxy-all"}, env...); err != nil {
			return res, err
		}
		defer r.stop()
		if err := resetCounts(r); err != nil {
			return res, err
		}
		wsURL = r.wsURL()
	}
	probeDone := make(chan struct{})
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		item := fmt.Sprintf("/items/%s/%d", w.coll, w.first)
		for {
			select {
			case <-probeDone:
				return
			default:
			}
			t0 := time.Now()
			_, _ = dx.Do(ctx, "", http.MethodGet, "/server/ping", nil, nil)
			res.ping = append(res.ping, ms(time.Since(t0)))
			t0 = time.Now()
			_, _ = dx.Do(ctx, dx.AdminToken, http.MethodGet, item, nil, nil)
			res.item = append(res.item, ms(time.Since(t0)))
		}
	}()
	p := newPool(wsURL, "", proto, newTracker(w.first, w.keys))
	p.tokenOf = tokenOf
	start := time.Now()
	err := p.grow(ctx, n, 512, func(int) string { return w.coll })
	res.took = time.Since(start)
	res.retried = p.retried.Load()
	close(probeDone)
	<-probed
	p.close()
	if err != nil {
		return res, err
	}
	if r == nil {
		return res, nil // Directus's own: the bench's stub does not see its calls
	}
	counts, err := directusCounts(r)
	if err != nil {
		return res, err
	}
	for k, v := range counts {
		res.total += v
		res.parts = append(res.parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(res.parts)
	return res, nil
}

// mixedRoles is the 10,000 users in 10 roles again, the rules of six
// roles changed to per-user ones: roles 0 and 8 read everything, 1 and 9
// the published items, 2 and 3 their own (owner = $CURRENT_USER), 4 and 5
// their team's (team = $CURRENT_USER.bench_team, 20 teams), 6 and 7 the
// published items and their own (an _or: a mixed rule). Each event's item
// is owned by a user of role 2 or 6 and is of one team, published or not.
func (b *bench) mixedRoles(ctx context.Context, dx *directustest.Instance, w *classWorld, service, secret string, jwts []string) error {
	const scen = "8"
	rules := map[int]any{
		2: map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}},
		3: map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}},
		4: map[string]any{"team": map[string]any{"_eq": "$CURRENT_USER.bench_team"}},
		5: map[string]any{"team": map[string]any{"_eq": "$CURRENT_USER.bench_team"}},
		6: map[string]any{"_or": []any{map[string]any{"status": map[string]any{"_eq": "published"}}, map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}}}},
		7: map[string]any{"_or": []any{map[string]any{"status": map[string]any{"_eq": "published"}}, map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}}}},
	}
	for ri, rule := range rules {
		var access struct {
			Data []struct {
				Policy string `json:"policy"`
			} `json:"data"`
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodGet, "/access?fields=policy&filter[role][_eq]="+w.roleIDs[ri], nil, &access); err != nil || len(access.Data) == 0 {
			return fmt.Errorf("role %d's policy: %v", ri, err)
		}
		var perms struct {
			Data []struct {
				ID int `json:"id"`
			} `json:"data"`
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodGet, "/permissions?fields=id&filter[collection][_eq]="+w.coll+"&filter[policy][_eq]="+access.Data[0].Policy, nil, &perms); err != nil || len(perms.Data) != 1 {
			return fmt.Errorf("role %d's permission: %v %v", ri, err, perms.Data)
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/permissions/"+strconv.Itoa(perms.Data[0].ID), map[string]any{"permissions": rule}, nil); err != nil {
			return fmt.Errorf("role %d's rule: %w", ri, err)
		}
	}
	teamOf := func(i int) int { return (i / 10) % 20 }
	byTeam := map[int][]string{}
	for i, u := range w.users {
		if r := i % 10; r == 4 || r == 5 {
			byTeam[teamOf(i)] = append(byTeam[teamOf(i)], u.id)
		}
	}
	for team, ids := range byTeam {
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/users", map[string]any{"keys": ids, "data": map[string]any{"bench_team": "t" + strconv.Itoa(team)}}, nil); err != nil {
			return fmt.Errorf("users' teams: %w", err)
		}
	}
	client, _ := directus.NewClient(dx.URL, time.Minute)
	if err := flow.SyncServicePolicy(ctx, client, dx.AdminToken); err != nil {
		return fmt.Errorf("service policy: %w", err)
	}
	// The events' items.
	n := b.sz.classEvents + 1
	owners := []int{2, 6} // users i with i%10 == 2 or 6 own them, in turn
	type mixItem struct {
		owner     int
		team      int
		published bool
	}
	items := make([]mixItem, n)
	body := make([]map[string]any, n)
	for k := range items {
		it := mixItem{owner: owners[k%2] + 10*(k*37%(len(w.users)/10)), team: k % 20, published: k%3 != 0}
		items[k] = it
		status := "draft"
		if it.published {
			status = "published"
		}
		body[k] = map[string]any{"title": "mixed " + strconv.Itoa(k), "status": status, "owner": w.users[it.owner].id, "team": "t" + strconv.Itoa(it.team)}
	}
	var created struct {
		Data []struct {
			ID int `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/items/"+w.coll+"?fields=id", body, &created); err != nil || len(created.Data) != n {
		return fmt.Errorf("mixed items: %v", err)
	}
	first := created.Data[0].ID
	for k, d := range created.Data {
		if d.ID != first+k {
			return fmt.Errorf("mixed items: ids %d.. not consecutive", first)
		}
	}
	readers := func(it mixItem) int {
		c := 0
		for i := range w.users {
			switch i % 10 {
			case 0, 8:
				c++
			case 1, 9:
				if it.published {
					c++
				}
			case 2, 3:
				if i == it.owner {
					c++
				}
			case 4, 5:
				if teamOf(i) == it.team {
					c++
				}
			case 6, 7:
				if it.published || i == it.owner {
					c++
				}
			}
		}
		return c
	}

	r, err := b.startRig(ctx, []string{"-upstream", dx.URL, "-proxy-all"}, "TOKEN_CACHE_TTL=1h", "DIRECTUS_SERVICE_TOKEN="+service, "DIRECTUS_SECRET="+secret)
	if err != nil {
		return err
	}
	defer r.stop()
	tr := newTracker(first, n)
	p := newPool(r.wsURL(), "", brokerProtocol, tr)
	p.tokenOf = func(i int) string { return jwts[i] }
	defer p.close()
	start := time.Now()
	if err := p.grow(ctx, len(w.users), 512, func(int) string { return w.coll }); err != nil {
		return fmt.Errorf("mixed roles: subscribing: %w", err)
	}
	b.log.printf("  mixed roles: %s users subscribed in %.1fs", thousands(len(w.users)), time.Since(start).Seconds())
	poster := newPoster(r.webhookURL(), true, 1)
	defer poster.close()
	var lats []float64
	var calls float64
	for k, it := range items {
		key := created.Data[k].ID
		if err := resetCounts(r); err != nil {
			return err
		}
		want := readers(it)
		tr.arm(key, want)
		tr.markSent(key, tr.now())
		if err := poster.post(ctx, w.coll, key); err != nil {
			return err
		}
		d, ok := tr.wait(key, 2*time.Minute)
		if !ok {
			wnt, got := tr.counts(key, key+1)
			return fmt.Errorf("mixed roles: %d of %d readers got item %d (%+v)", got, wnt, key, it)
		}
		if err := waitQuiet(ctx, r); err != nil {
			return err
		}
		c, err := itemCalls(r)
		if err != nil {
			return err
		}
		if k < 3 {
			counts, _ := directusCounts(r)
			b.log.printf("  mixed roles: event %d (%+v): %d readers, %.0f item requests: %v", k, it, want, c, counts)
		}
		if k > 0 {
			lats = append(lats, ms(d))
			calls += c
		}
	}
	perEvent := calls / float64(len(lats))
	b.log.printf("  mixed roles: median %.1f ms to the last reader, %.1f Directus item requests per event", median(lats), perEvent)
	if m, err := metrics(r.broker.addr); err == nil {
		var parts []string
		for k, v := range m {
			if strings.HasPrefix(k, "broker_class_per_user_total") || k == "broker_groups" {
				parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
			}
		}
		sort.Strings(parts)
		b.log.printf("  mixed roles: %s", strings.Join(parts, ", "))
	}
	b.rep.add(scen, fmt.Sprintf("%s users in 10 roles: full, item rule, owner, team and mixed rules: webhook → last reader", thousands(len(w.users))), "ms", atMost(300), lats...)
	b.rep.add(scen, "  Directus item requests per event (reads and lookups)", "reads", atMost(40), perEvent)
	return nil
}

// ownerWrites makes REST writes of owners[0]'s items with the owner-rule
// users subscribed to the broker and, in the order dOrder gives, to
// Directus's own realtime; it returns the times to the owner on each.
func (b *bench) ownerWrites(ctx context.Context, dx *directustest.Instance, r *rig, w *classWorld, dOrder func(int) string, sequential bool) (bMs, dMs []float64, err error) {
	trOB := newTracker(w.ownFirst, w.ownKeys)
	trOD := trOB.sibling()
	ownB := newPool(r.wsURL(), "", brokerProtocol, trOB)
	ownB.tokenOf = func(i int) string { return w.owners[i].token }
	ownD := newPool(strings.Replace(dx.URL, "http://", "ws://", 1)+"/websocket", "", directusProtocol(""), trOD)
	ownD.tokenOf = dOrder
	defer func() { ownB.close(); ownD.close() }()
	n := len(w.owners)
	if err := ownB.grow(ctx, n, 64, func(int) string { return w.ownColl }); err != nil {
		return nil, nil, err
	}
	if sequential {
		// The last one strictly after all the others.
		if err := ownD.grow(ctx, n-1, 16, func(int) string { return w.ownColl }); err != nil {
			return nil, nil, fmt.Errorf("owners on Directus realtime: %w", err)
		}
	}
	if err := ownD.grow(ctx, n, 16, func(int) string { return w.ownColl }); err != nil {
		return nil, nil, fmt.Errorf("owners on Directus realtime: %w", err)
	}
	for i := range w.ownKeys {
		key := w.ownFirst + i
		trOB.arm(key, 1)
		trOD.arm(key, 1)
		at := trOB.now()
		trOB.markSent(key, at)
		trOD.markSent(key, at)
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/items/"+w.ownColl+"/"+strconv.Itoa(key), map[string]any{"title": "write " + strconv.Itoa(i)}, nil); err != nil {
			return nil, nil, err
		}
		bt, okB := trOB.wait(key, 2*time.Minute)
		dt, okD := trOD.wait(key, 2*time.Minute)
		if !okB || !okD {
			return nil, nil, fmt.Errorf("owner REST write %d: the owner did not get it (broker %v, Directus %v)", i, okB, okD)
		}
		if i > 0 {
			bMs, dMs = append(bMs, ms(bt)), append(dMs, ms(dt))
		}
		if err := waitQuiet(ctx, r); err != nil {
			return nil, nil, err
		}
	}
	return bMs, dMs, nil
}

// waitQuiet waits until the broker dispatched every event and its read
// count stood still for three polls (its reads for the last event ended).
// teamCase times events of a team-kind collection (every item of the
// first team), posted one at a time, to the last member of that team, and
// counts the group reads and Directus item requests per event.
func (b *bench) teamCase(ctx context.Context, r *rig, tw teamWorld, label, unit string) error {
	const scen = "8"
	tr := newTracker(tw.first, tw.keys)
	members := newPool(r.wsURL(), "", brokerProtocol, tr)
	defer members.close()
	members.tokenOf = func(i int) string { return tw.users[i].token }
	if err := members.grow(ctx, len(tw.users), 64, func(int) string { return tw.coll }); err != nil {
		return err
	}
	poster := newPoster(r.webhookURL(), true, 1)
	defer poster.close()
	reads0, _ := r.metric("broker_reads_total")
	if err := resetCounts(r); err != nil {
		return err
	}
	per := len(tw.users) / tw.teams
	var lats []float64
	for i := range tw.keys {
		key := tw.first + i
		tr.arm(key, per)
		tr.markSent(key, tr.now())
		if err := poster.post(ctx, tw.coll, key); err != nil {
			return err
		}
		d, ok := tr.wait(key, 2*time.Minute)
		if !ok {
			wnt, got := tr.counts(key, key+1)
			return fmt.Errorf("%s: %d of %d members got the event", label, got, wnt)
		}
		if i > 0 {
			lats = append(lats, ms(d))
		}
		if err := waitQuiet(ctx, r); err != nil { // the other classes' reads
			return err
		}
	}
	reads1, _ := r.metric("broker_reads_total")
	reads := (reads1 - reads0) / float64(tw.keys)
	calls, err := itemCalls(r)
	if err != nil {
		return err
	}
	b.log.printf("  %s: median %.1f ms to the last member, %.1f group reads and %.1f Directus item requests per event", label, median(lats), reads, calls/float64(tw.keys))
	b.rep.add(scen, label+": webhook → last member of the item's "+unit, "ms", atMost(60), lats...)
	b.rep.add(scen, "  Directus item requests per event (the lookup and the item's "+unit+"'s read)", "reads", atMost(float64(tw.teams+1)), calls/float64(tw.keys))
	b.rep.add(scen, "  group reads per event (a class per "+unit+"; only the item's "+unit+" reads)", "reads", nil, reads)
	return nil
}

func waitQuiet(ctx context.Context, r *rig) error {
	deadline := time.Now().Add(2 * time.Minute)
	last, still := -1.0, 0
	for time.Now().Before(deadline) {
		pub, err1 := r.metric("broker_events_published_total")
		disp, err2 := r.metric("broker_events_dispatched_total")
		reads, err3 := r.metric("broker_reads_total")
		// Access events (the Flow posts them: flow install brings the
		// service policies in step) are applied, not dispatched.
		acc, err4 := r.metric("broker_access_changes_total")
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return fmt.Errorf("metrics: %v %v %v %v", err1, err2, err3, err4)
		}
		if pub == disp+acc && reads == last {
			if still++; still == 3 {
				return nil
			}
		} else {
			still = 0
		}
		last = reads
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	pub, _ := r.metric("broker_events_published_total")
	disp, _ := r.metric("broker_events_dispatched_total")
	acc, _ := r.metric("broker_access_changes_total")
	return fmt.Errorf("the broker did not finish dispatching (published %.0f, dispatched %.0f, access changes %.0f, reads %.0f)", pub, disp, acc, last)
}

func resetCounts(r *rig) error {
	resp, err := http.Post("http://"+r.stub.addr+"/_bench/counts", "", nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// itemCalls are the item requests the broker made to Directus since the
// counts were reset (reads, lookups, checks).
func itemCalls(r *rig) (float64, error) {
	counts, err := directusCounts(r)
	if err != nil {
		return 0, err
	}
	n := 0
	for k, c := range counts {
		if strings.HasPrefix(k, "item reads") {
			n += c
		}
	}
	return float64(n), nil
}

func directusCounts(r *rig) (map[string]int, error) {
	resp, err := http.Get("http://" + r.stub.addr + "/_bench/counts")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]int
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("counts: %w", err)
	}
	return m, nil
}

// installClassFlow makes Directus post the item events to r's broker (and
// the access changes), with the broker's own flow install.
func (b *bench) installClassFlow(ctx context.Context, dx *directustest.Instance, r *rig) error {
	cmd := exec.CommandContext(ctx, b.broker, "flow", "install", "--directus-url", dx.URL, "--broker-url", r.webhookURL())
	cmd.Env = append(cmd.Environ(), "DIRECTUS_ADMIN_TOKEN="+dx.AdminToken, "WEBHOOK_SECRET="+webhookSecret)
	cmd.Dir = b.work
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("flow install: %v: %s", err, out)
	}
	return nil
}

// classWorld is scenario 8's Directus content.
type classWorld struct {
	coll, ownColl string
	first, keys   int // items first..first+keys-1 of coll, all published
	// ownFirst..ownFirst+ownKeys-1 are the items of ownColl owners[0] owns.
	ownFirst, ownKeys int
	users             []benchUser
	owners            []benchUser
	// team: user i in team i % teams reads by the rule team =
	// $CURRENT_USER.bench_team; org: user i in organization i % 2·teams,
	// of tier i % teams, reads by team = $CURRENT_USER.bench_org.tier.
	team, org teamWorld
	roleIDs   []string // the 10 roles of users
}

// teamWorld is a collection read by a team-kind rule: users in teams
// classes, the items first..first+keys-1 all of the first team.
type teamWorld struct {
	coll        string
	teams       int
	first, keys int
	users       []benchUser
}

type benchUser struct{ id, token, role string }

// newClassWorld makes roles 0..roles-1 (even: full read, odd: status =
// published) with n users (user i in role i%roles), an owner role with
// owners users (rule owner = $CURRENT_USER), and the collections.
func newClassWorld(ctx context.Context, dx *directustest.Instance, n, roles, owners, keys, ownedItems int) (*classWorld, error) {
	w := &classWorld{coll: "bench_classes", ownColl: "bench_owned", keys: keys,
		team: teamWorld{coll: "bench_teams", teams: 20}, org: teamWorld{coll: "bench_org_items", teams: 20}}
	fields := []directustest.Field{{Name: "title"}, {Name: "status"}, {Name: "owner"}, {Name: "team"}}
	for _, c := range []string{w.coll, w.ownColl, w.team.coll, w.org.coll} {
		if err := dx.CreateCollection(ctx, c, fields...); err != nil {
			return nil, err
		}
	}
	items := make([]map[string]any, keys)
	for i := range items {
		items[i] = map[string]any{"title": "item " + strconv.Itoa(i), "status": "published"}
	}
	var created struct {
		Data []struct {
			ID int `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/items/"+w.coll+"?fields=id", items, &created); err != nil {
		return nil, fmt.Errorf("items: %w", err)
	}
	w.first = created.Data[0].ID
	for _, d := range created.Data {
		w.first = min(w.first, d.ID)
	}
	role := func(name string, filter map[string]any, coll string) (string, error) {
		return dx.CreateRoleWithReadPolicy(ctx, name, coll, nil, filter)
	}
	roleIDs := make([]string, roles)
	for i := range roleIDs {
		filter := map[string]any{}
		if i%2 == 1 {
			filter = map[string]any{"status": map[string]any{"_eq": "published"}}
		}
		id, err := role(fmt.Sprintf("bench role %d", i), filter, w.coll)
		if err != nil {
			return nil, err
		}
		roleIDs[i] = id
	}
	w.roleIDs = roleIDs
	ownerRole, err := role("bench owners", map[string]any{"owner": map[string]any{"_eq": "$CURRENT_USER"}}, w.ownColl)
	if err != nil {
		return nil, err
	}
	makeUsers := func(prefix string, count int, roleOf func(i int) string) ([]benchUser, error) {
		var out []benchUser
		for start := 0; start < count; start += 500 {
			var batch []map[string]any
			for i := start; i < min(count, start+500); i++ {
				batch = append(batch, map[string]any{"email": fmt.Sprintf("%s%d@example.com", prefix, i), "token": fmt.Sprintf("%s-token-%d", prefix, i), "role": roleOf(i), "status": "active"})
			}
			var res struct {
				Data []struct {
					ID    string `json:"id"`
					Email string `json:"email"`
				} `json:"data"`
			}
			if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/users?fields=id,email", batch, &res); err != nil {
				return nil, fmt.Errorf("users: %w", err)
			}
			byEmail := map[string]string{}
			for _, u := range res.Data {
				byEmail[u.Email] = u.ID
			}
			for i := start; i < min(count, start+500); i++ {
				out = append(out, benchUser{id: byEmail[fmt.Sprintf("%s%d@example.com", prefix, i)], token: fmt.Sprintf("%s-token-%d", prefix, i), role: roleOf(i)})
			}
		}
		return out, nil
	}
	if w.users, err = makeUsers("bu", n, func(i int) string { return roleIDs[i%roles] }); err != nil {
		return nil, err
	}
	if w.owners, err = makeUsers("bo", owners, func(int) string { return ownerRole }); err != nil {
		return nil, err
	}
	owned := make([]map[string]any, ownedItems)
	for i := range owned {
		owned[i] = map[string]any{"title": "owned " + strconv.Itoa(i), "owner": w.owners[0].id}
	}
	var ownIDs struct {
		Data []struct {
			ID int `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/items/"+w.ownColl+"?fields=id", owned, &ownIDs); err != nil {
		return nil, fmt.Errorf("owned items: %w", err)
	}
	w.ownFirst, w.ownKeys = ownIDs.Data[0].ID, len(ownIDs.Data)
	for _, d := range ownIDs.Data {
		w.ownFirst = min(w.ownFirst, d.ID)
	}

	// Teams: a field of the users, a rule naming it (before flow install,
	// which grants the service user the fields rules name).
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/fields/directus_users", map[string]any{"field": "bench_team", "type": "string"}, nil); err != nil {
		return nil, fmt.Errorf("users' team field: %w", err)
	}
	teamRole, err := role("bench team members", map[string]any{"team": map[string]any{"_eq": "$CURRENT_USER.bench_team"}}, w.team.coll)
	if err != nil {
		return nil, err
	}
	if w.team.users, err = makeUsers("bt", owners, func(int) string { return teamRole }); err != nil {
		return nil, err
	}
	for t := range w.team.teams {
		var ids []string
		for i := t; i < len(w.team.users); i += w.team.teams {
			ids = append(ids, w.team.users[i].id)
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/users", map[string]any{"keys": ids, "data": map[string]any{"bench_team": fmt.Sprint("t", t)}}, nil); err != nil {
			return nil, fmt.Errorf("users' teams: %w", err)
		}
	}
	// Organizations: a many-to-one of the users into bench_orgs, two
	// organizations per tier.
	if err := dx.CreateCollection(ctx, "bench_orgs", directustest.Field{Name: "tier"}); err != nil {
		return nil, err
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/fields/directus_users", map[string]any{"field": "bench_org", "type": "integer", "meta": map[string]any{"special": nil}, "schema": map[string]any{}}, nil); err != nil {
		return nil, fmt.Errorf("users' organization field: %w", err)
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/relations", map[string]any{"collection": "directus_users", "field": "bench_org", "related_collection": "bench_orgs"}, nil); err != nil {
		return nil, fmt.Errorf("users' organization relation: %w", err)
	}
	orgs := make([]map[string]any, 2*w.org.teams)
	for j := range orgs {
		orgs[j] = map[string]any{"tier": fmt.Sprint("t", j%w.org.teams)}
	}
	var orgIDs struct {
		Data []struct {
			ID int `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/items/bench_orgs?fields=id", orgs, &orgIDs); err != nil {
		return nil, fmt.Errorf("organizations: %w", err)
	}
	orgRole, err := role("bench organization members", map[string]any{"team": map[string]any{"_eq": "$CURRENT_USER.bench_org.tier"}}, w.org.coll)
	if err != nil {
		return nil, err
	}
	if w.org.users, err = makeUsers("bg", owners, func(int) string { return orgRole }); err != nil {
		return nil, err
	}
	for j, o := range orgIDs.Data {
		var ids []string
		for i := j; i < len(w.org.users); i += len(orgIDs.Data) {
			ids = append(ids, w.org.users[i].id)
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/users", map[string]any{"keys": ids, "data": map[string]any{"bench_org": o.ID}}, nil); err != nil {
			return nil, fmt.Errorf("users' organizations: %w", err)
		}
	}
	for _, tw := range []*teamWorld{&w.team, &w.org} {
		items := make([]map[string]any, ownedItems)
		for i := range items {
			items[i] = map[string]any{"title": "team " + strconv.Itoa(i), "team": "t0"}
		}
		var ids struct {
			Data []struct {
				ID int `json:"id"`
			} `json:"data"`
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/items/"+tw.coll+"?fields=id", items, &ids); err != nil {
			return nil, fmt.Errorf("items of %s: %w", tw.coll, err)
		}
		tw.first, tw.keys = ids.Data[0].ID, len(ids.Data)
		for _, d := range ids.Data {
			tw.first = min(tw.first, d.ID)
		}
	}
	return w, nil
}
