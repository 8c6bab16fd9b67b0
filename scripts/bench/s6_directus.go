package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// versusDirectus is scenario 6: the same REST write in Directus timed to
// the last of N subscribers of the broker and of Directus's own realtime
// endpoint, both connected at once. For the broker the path is
// write → Directus Flow (Connection: close) → webhook → one read of the
// item from Directus (through the stub, which proxies item reads; it only
// answers the subscribe probes and token checks itself) → fan-out. Directus
// re-reads the item for every one of its subscribers.
//
// The Flow runs in the same Node process as Directus's realtime, so in the
// side-by-side writes the broker's path may wait behind Directus's own
// per-subscriber re-reads. The broker is therefore also timed alone first,
// before any Directus realtime subscriber connects.
func (b *bench) versusDirectus(ctx context.Context) error {
	const scen = "6"
	if b.dx == nil {
		b.rep.skip(scen, "broker vs Directus realtime", "no Directus (-no-directus, or it did not start)")
		return nil
	}
	sz := b.sz
	const coll = "bench_realtime"
	keys := 8
	for _, w := range sz.vsWrites {
		keys += 2*w + 1
	}
	first, err := prepareCollection(ctx, b.dx, coll, keys)
	if err != nil {
		return err
	}
	r, err := b.startRig(ctx, []string{"-upstream", b.dx.URL, "-proxy"})
	if err != nil {
		return err
	}
	defer r.stop()
	if err := b.installFlow(ctx, r, coll); err != nil {
		return err
	}
	trB := newTracker(first, keys)
	trD := trB.sibling()
	next := first
	// write times one PATCH of the next item to the last receipt of the nB
	// broker and nD Directus subscribers.
	write := func(nB, nD int) (broker, dx time.Duration, err error) {
		key := next
		next++
		trB.arm(key, nB)
		trD.arm(key, nD)
		at := trB.now()
		trB.markSent(key, at)
		trD.markSent(key, at)
		if _, err := b.dx.Do(ctx, b.dx.AdminToken, http.MethodPatch, "/items/"+coll+"/"+strconv.Itoa(key), map[string]any{"title": "write " + strconv.Itoa(key)}, nil); err != nil {
			return 0, 0, err
		}
		broker, okB := trB.wait(key, 2*time.Minute)
		dx, okD := trD.wait(key, 2*time.Minute)
		if nD == 0 {
			okD = true
		}
		if !okB || !okD {
			wantB, gotB := trB.counts(key, key+1)
			wantD, gotD := trD.counts(key, key+1)
			return broker, dx, fmt.Errorf("write %d: broker subscribers got %d of %d, Directus's %d of %d within 2 minutes", key, gotB, wantB, gotD, wantD)
		}
		return broker, dx, nil
	}

	// The broker alone: no Directus realtime subscribers exist yet. The
	// first write, not counted, proves the Flow delivers.
	alone := make([][]float64, len(sz.vsSubs))
	pA := newPool(r.wsURL(), subscriberToken, brokerProtocol, trB)
	// One subscriber first: the path's floor (the Flow, the webhook, one
	// read), with almost no fan-out.
	if err := pA.grow(ctx, 1, 1, func(int) string { return coll }); err != nil {
		pA.close()
		return err
	}
	var floor []float64
	for w := range 4 {
		bt, _, err := write(1, 0)
		if err != nil {
			pA.close()
			return fmt.Errorf("one broker subscriber (is the Flow delivering to the broker?): %w", err)
		}
		if w > 0 {
			floor = append(floor, ms(bt))
		}
	}
	b.rep.add(scen, "REST write → 1 broker sub (Flow + webhook + one read: the floor)", "ms", nil, floor...)
	for i, n := range sz.vsSubs {
		if err := pA.grow(ctx, n, 64, func(int) string { return coll }); err != nil {
			pA.close()
			return err
		}
		for w := range sz.vsWrites[i] + 1 {
			bt, _, err := write(n, 0)
			if err != nil {
				pA.close()
				return fmt.Errorf("broker alone (is the Flow delivering to the broker?): %w", err)
			}
			if w > 0 {
				alone[i] = append(alone[i], ms(bt))
			}
		}
		b.log.printf("  broker alone, %d subs: median %.1f ms", n, median(alone[i]))
	}
	pA.close()

	// Side by side: both kinds of subscribers connected at once.
	pB := newPool(r.wsURL(), subscriberToken, brokerProtocol, trB)
	defer pB.close()
	pD := newPool(strings.Replace(b.dx.URL, "http://", "ws://", 1)+"/websocket", "", directusProtocol(b.dx.AdminToken), trD)
	defer pD.close()
	for i, n := range sz.vsSubs {
		if err := pB.grow(ctx, n, 64, func(int) string { return coll }); err != nil {
			return err
		}
		start := time.Now()
		if err := pD.grow(ctx, n, 16, func(int) string { return coll }); err != nil {
			return fmt.Errorf("subscribing to Directus realtime: %w", err)
		}
		b.log.printf("  %d Directus realtime subscribers in %.1fs", n, time.Since(start).Seconds())
		var brokerMs, dxMs []float64
		for w := range sz.vsWrites[i] {
			bt, dt, err := write(n, n)
			if err != nil {
				return err
			}
			brokerMs = append(brokerMs, ms(bt))
			dxMs = append(dxMs, ms(dt))
			b.log.printf("  %d subs, write %d: broker %.1f ms, Directus %.1f ms (×%.1f)", n, w+1, ms(bt), ms(dt), float64(dt)/float64(bt))
		}
		N := thousands(n)
		b.rep.add(scen, fmt.Sprintf("REST write → last of %s broker subs (Flow → webhook → read → fan-out)", N), "ms", nil, brokerMs...)
		b.rep.add(scen, fmt.Sprintf("REST write → last of %s Directus realtime subs, same writes", N), "ms", nil, dxMs...)
		b.plot.add(seriesBroker, n, brokerMs)
		b.plot.add(seriesDirectus, n, dxMs)
		b.plot.add(seriesAlone, n, alone[i])
		var tgt *target
		switch n {
		case 1000:
			tgt = atLeast(10)
		case 5000:
			tgt = atLeast(25)
		}
		// The ratio of the medians, not the median of the ratios.
		b.rep.add(scen, fmt.Sprintf("Directus ÷ broker at %s subs", N), "×", tgt, median(dxMs)/median(brokerMs))
		b.rep.add(scen, fmt.Sprintf("REST write → last of %s broker subs, no Directus realtime subs", N), "ms", nil, alone[i]...)
		if err := r.broker.alive(); err != nil {
			return err
		}
	}
	return nil
}

// installFlow makes Directus post every item event of collection to the
// broker's webhook: with the broker's own `flow install` command, or, when
// that fails, with the three REST calls it stands for.
func (b *bench) installFlow(ctx context.Context, r *rig, collection string) error {
	cmd := exec.CommandContext(ctx, b.broker, "flow", "install", "--directus-url", b.dx.URL, "--broker-url", r.webhookURL(), "--collections", collection)
	cmd.Env = append(cmd.Environ(), "DIRECTUS_ADMIN_TOKEN="+b.dx.AdminToken, "WEBHOOK_SECRET="+webhookSecret)
	cmd.Dir = b.work
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	b.log.printf("  flow install failed (%v: %s); creating the Flow over REST", err, strings.TrimSpace(string(out)))
	var flow, op struct {
		Data struct {
			ID any `json:"id"`
		} `json:"data"`
	}
	if _, err := b.dx.Do(ctx, b.dx.AdminToken, http.MethodPost, "/flows", map[string]any{
		"name": "bench broker", "status": "active", "trigger": "event", "accountability": "all",
		"options": map[string]any{"type": "action", "scope": []string{"items.create", "items.update", "items.delete"}, "collections": []string{collection}},
	}, &flow); err != nil {
		return fmt.Errorf("create flow: %w", err)
	}
	if _, err := b.dx.Do(ctx, b.dx.AdminToken, http.MethodPost, "/operations", map[string]any{
		"name": "to broker", "key": "to_broker", "type": "request", "position_x": 19, "position_y": 1, "flow": flow.Data.ID,
		"options": map[string]any{"method": "POST", "url": r.webhookURL(), "body": "{{$trigger}}",
			"headers": []map[string]string{{"header": "X-Webhook-Secret", "value": webhookSecret}}},
	}, &op); err != nil {
		return fmt.Errorf("create operation: %w", err)
	}
	if flow.Data.ID == nil || op.Data.ID == nil {
		return errors.New("create flow: Directus returned no ids")
	}
	if _, err := b.dx.Do(ctx, b.dx.AdminToken, http.MethodPatch, fmt.Sprintf("/flows/%v", flow.Data.ID), map[string]any{"operation": op.Data.ID}, nil); err != nil {
		return fmt.Errorf("attach operation: %w", err)
	}
	return nil
}
