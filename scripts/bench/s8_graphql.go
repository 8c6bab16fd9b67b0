package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// graphQLCase (issue 23): the same users of one role subscribed to the
// broker's /realtime and then to its /graphql (the same broker, the same
// REST writes through the Flow), each subscription reading every field:
// REST write → last subscriber, and the broker's reads per event.
func (b *bench) graphQLCase(ctx context.Context, dx *directustest.Instance, r *rig, w *classWorld, tokenOf func(int) string, next *int) error {
	const scen = "8"
	sz := b.sz
	N := thousands(sz.classUsers)
	doc := func(c string) string {
		return "subscription { " + c + "_mutated { key event data { id title status owner team } } }"
	}
	base := "ws://" + r.broker.addr
	type side struct {
		name  string
		url   string
		proto protocol
		ms    []float64
		reads float64 // the most of its runs
	}
	rt := &side{name: "/realtime", url: base + "/realtime", proto: directusProtocol("")}
	gql := &side{name: "/graphql", url: base + "/graphql", proto: graphQLProtocol(doc)}
	// Alternately, twice each: neither side always runs on a warmer (or
	// more loaded) broker and Directus.
	for _, sd := range []*side{rt, gql, gql, rt} {
		tr := newTracker(w.first, w.keys)
		p := newPool(sd.url, "", sd.proto, tr)
		p.tokenOf = tokenOf
		start := time.Now()
		if err := p.grow(ctx, sz.classUsers, 64, func(int) string { return w.coll }); err != nil {
			p.close()
			return fmt.Errorf("subscribing to the broker's %s: %w", sd.name, err)
		}
		b.log.printf("  %d users subscribed to the broker's %s in %.1fs", sz.classUsers, sd.name, time.Since(start).Seconds())
		reads0, _ := r.metric("broker_reads_total")
		for i := range sz.classWrites + 1 {
			key := *next
			*next++
			tr.arm(key, sz.classUsers)
			tr.markSent(key, tr.now())
			if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/items/"+w.coll+"/"+strconv.Itoa(key), map[string]any{"title": "write " + strconv.Itoa(i)}, nil); err != nil {
				p.close()
				return err
			}
			d, ok := tr.wait(key, 2*time.Minute)
			if !ok {
				wnt, got := tr.counts(key, key+1)
				p.close()
				return fmt.Errorf("%s, REST write %d: %d of %d subscribers got it", sd.name, i, got, wnt)
			}
			if i > 0 { // the first warms caches
				sd.ms = append(sd.ms, ms(d))
			}
		}
		reads1, _ := r.metric("broker_reads_total")
		sd.reads = max(sd.reads, (reads1-reads0)/float64(sz.classWrites+1))
		p.close()
		b.log.printf("  broker's %s: REST write → last of %s users, median %.1f ms so far, %.1f reads per event", sd.name, N, median(sd.ms), sd.reads)
	}
	b.rep.add(scen, fmt.Sprintf("REST write → last of %s users of 1 role on the broker's /realtime", N), "ms", nil, rt.ms...)
	b.rep.add(scen, "  reads per event, /realtime", "reads", atMost(1), rt.reads)
	b.rep.add(scen, fmt.Sprintf("REST write → last of the same %s users over GraphQL (/graphql, the same fields)", N), "ms", nil, gql.ms...)
	b.rep.add(scen, "  reads per event, /graphql", "reads", atMost(1), gql.reads)
	b.rep.add(scen, "  /graphql ÷ /realtime", "×", atMost(1.2), median(gql.ms)/median(rt.ms))
	return nil
}
