package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// writeLatency is scenario 9 (issue 14): a REST write in Directus timed to
// the first frame, for 1 subscriber and for the last of 100, of the broker
// (fed by the Flow flow install makes, logging no activity) and of
// Directus's own realtime, the same writes, both connected at once; and
// where the broker's time goes, from its own timestamps (its debug log) and
// Directus's request log at debug level.
func (b *bench) writeLatency(ctx context.Context) error {
	const scen = "9"
	if b.opts.noDirectus {
		b.rep.skip(scen, "write latency", "no Directus (-no-directus)")
		return nil
	}
	sz := b.sz
	b.log.printf("  starting Directus 11.17.4 (WEBSOCKETS_ENABLED, LOG_LEVEL=debug)")
	dx, err := directustest.Start(ctx, directustest.Options{Version: "11.17.4", Env: map[string]string{
		"WEBSOCKETS_ENABLED": "true", "LOG_LEVEL": "debug", "LOG_STYLE": "raw",
	}})
	if err != nil {
		return fmt.Errorf("starting Directus: %w", err)
	}
	defer dx.Stop()
	const coll = "bench_write"
	writes := sz.writeWrites
	keys := 2 * (writes + 2)
	first, err := prepareCollection(ctx, dx, coll, keys)
	if err != nil {
		return err
	}
	traces := newTraceLog()
	// Its debug log gives the breakdown; the limits per user would refuse
	// the 100 subscribers of one token.
	broker, err := startProcTap(ctx, "broker", b.broker, nil, append(baseBrokerEnv(dx.URL), "LOG_LEVEL=debug"), b.work, traces.line)
	if err != nil {
		return err
	}
	defer broker.stop()
	cmd := exec.CommandContext(ctx, b.broker, "flow", "install", "--directus-url", dx.URL, "--broker-url", "http://"+broker.addr+"/webhook", "--collections", coll)
	cmd.Env = append(cmd.Environ(), "DIRECTUS_ADMIN_TOKEN="+dx.AdminToken, "WEBHOOK_SECRET="+webhookSecret)
	cmd.Dir = b.work
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("flow install: %v: %s", err, out)
	}
	if b.opts.flowRead {
		if err := flowReadsItem(ctx, dx); err != nil {
			return err
		}
	}
	tr := newTracker(first, keys)
	trD := tr.sibling()
	next := first
	type sample struct {
		total, dx                         time.Duration
		rest, flow, read, dispatch, write time.Duration
		ok                                bool
	}
	write := func(n int) (sample, error) {
		key := next
		next++
		tr.arm(key, n)
		trD.arm(key, n)
		at := tr.now()
		tr.markSent(key, at)
		trD.markSent(key, at)
		t0 := time.Now()
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/items/"+coll+"/"+strconv.Itoa(key), map[string]any{"title": "write " + strconv.Itoa(key)}, nil); err != nil {
			return sample{}, err
		}
		rest := time.Since(t0)
		bt, okB := tr.wait(key, time.Minute)
		dt, okD := trD.wait(key, time.Minute)
		if !okB || !okD {
			return sample{}, fmt.Errorf("write %d: not every subscriber got it (broker %v, Directus %v)", key, okB, okD)
		}
		s := sample{total: bt, dx: dt, rest: rest}
		if t, ok := traces.get(strconv.Itoa(key)); ok && n == 1 {
			frame := t0.Add(bt)
			received, queued := time.UnixMicro(t.received), time.UnixMicro(t.queued)
			s.flow = received.Sub(t0.Add(rest))
			s.read = time.Duration(t.read) * time.Microsecond
			s.dispatch = queued.Sub(received) - s.read
			s.write = frame.Sub(queued)
			s.ok = true
		}
		return s, nil
	}
	pB := newPool("ws://"+broker.addr+"/websocket", dx.AdminToken, brokerProtocol, tr)
	defer pB.close()
	pD := newPool(strings.Replace(dx.URL, "http://", "ws://", 1)+"/websocket", "", directusProtocol(dx.AdminToken), trD)
	defer pD.close()
	for _, n := range []int{1, sz.writeSubs} {
		if err := pB.grow(ctx, n, 32, func(int) string { return coll }); err != nil {
			return err
		}
		if err := pD.grow(ctx, n, 16, func(int) string { return coll }); err != nil {
			return fmt.Errorf("subscribing to Directus realtime: %w", err)
		}
		var brokerMs, dxMs []float64
		var parts [5][]float64
		for i := range writes + 1 {
			s, err := write(n)
			if err != nil {
				return err
			}
			if i == 0 {
				continue // warms the Flow and the caches
			}
			brokerMs = append(brokerMs, ms(s.total))
			dxMs = append(dxMs, ms(s.dx))
			if s.ok {
				for j, d := range []time.Duration{s.rest, s.flow, s.read, s.dispatch, s.write} {
					parts[j] = append(parts[j], ms(d))
				}
			}
		}
		b.log.printf("  %d subscriber(s): broker median %.1f ms, Directus realtime %.1f ms", n, median(brokerMs), median(dxMs))
		label := "1 subscriber"
		var tgt *target
		if n == 1 {
			tgt = atLeast(1)
		} else {
			label = "last of " + thousands(n)
			tgt = atLeast(3)
		}
		b.rep.add(scen, fmt.Sprintf("REST write → %s, broker (Flow without activity logging)", label), "ms", nil, brokerMs...)
		b.rep.add(scen, fmt.Sprintf("REST write → %s, Directus's own realtime, same writes", label), "ms", nil, dxMs...)
		b.rep.add(scen, fmt.Sprintf("  Directus realtime ÷ broker, %s", label), "×", tgt, median(dxMs)/median(brokerMs))
		if n == 1 && len(parts[0]) > 0 {
			for j, name := range []string{
				"REST PATCH answered (client ↔ Directus)",
				"then the Flow runs and its POST reaches the webhook",
				"the broker's read of the item (GET /items, in Directus)",
				"the broker's own work (publish, dispatch, encode, queue)",
				"the frame written and read by the client",
			} {
				b.rep.add(scen, "  breakdown, 1 subscriber: "+name, "ms", nil, parts[j]...)
			}
			if b.opts.flowRead {
				// What a broker that used the posted item instead of its
				// own read would take: everything but the read.
				var noRead []float64
				for i := range parts[0] {
					noRead = append(noRead, parts[0][i]+parts[1][i]+parts[3][i]+parts[4][i])
				}
				b.rep.add(scen, "  with the item read in the Flow, the broker without its read (sum of the other steps)", "ms", nil, noRead...)
			}
			if d := directusTimes(dx, coll); d != "" {
				b.rep.note(d)
			}
		}
	}
	return nil
}

// traceLog collects the broker's debug lines about events, by item key.
type traceLog struct {
	mu     sync.Mutex
	byKey  map[string]*trace
	events map[string]string // event id → key
}

type trace struct{ received, queued, read int64 }

func newTraceLog() *traceLog {
	return &traceLog{byKey: map[string]*trace{}, events: map[string]string{}}
}

func (l *traceLog) line(b []byte) {
	if !json.Valid(b) {
		return
	}
	var m struct {
		Message    string   `json:"message"`
		Keys       []string `json:"keys"`
		ReceivedUS int64    `json:"received_us"`
		QueuedUS   int64    `json:"queued_us"`
		ReadUS     int64    `json:"read_us"`
	}
	if json.Unmarshal(b, &m) != nil || len(m.Keys) != 1 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.byKey[m.Keys[0]]
	if t == nil {
		t = &trace{}
		l.byKey[m.Keys[0]] = t
	}
	switch m.Message {
	case "event received":
		t.received = m.ReceivedUS
	case "event delivered to a group":
		t.queued, t.read = m.QueuedUS, m.ReadUS
	}
}

func (l *traceLog) get(key string) (trace, bool) {
	// The delivered line is written just before the frame reaches the
	// client; give the log pipe a moment to carry it.
	for range 50 {
		l.mu.Lock()
		t, ok := l.byKey[key]
		if ok && t.received != 0 && t.queued != 0 {
			tt := *t
			l.mu.Unlock()
			return tt, true
		}
		l.mu.Unlock()
		time.Sleep(2 * time.Millisecond)
	}
	return trace{}, false
}

// directusTimes summarizes Directus's own request log: how long it took to
// answer the PATCHes and the broker's item reads.
func directusTimes(dx *directustest.Instance, coll string) string {
	var patch, get []float64
	for _, line := range strings.Split(dx.Log(), "\n") {
		var m struct {
			Req struct {
				Method string `json:"method"`
				URL    string `json:"url"`
			} `json:"req"`
			ResponseTime float64 `json:"responseTime"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || !strings.Contains(m.Req.URL, "/items/"+coll+"/") {
			continue
		}
		switch m.Req.Method {
		case http.MethodPatch:
			patch = append(patch, m.ResponseTime)
		case http.MethodGet:
			get = append(get, m.ResponseTime)
		}
	}
	if len(patch) == 0 {
		return ""
	}
	return fmt.Sprintf("Directus's log: PATCH answered in %.1f ms (median of %d), the broker's GET in %.1f ms (median of %d)", median(patch), len(patch), median(get), len(get))
}

// flowReadsItem (-flow-read) puts an item-read operation with full access
// before the webhook operation of every Flow, as a Flow that posted the
// item with the event would have to. The broker still reads; the breakdown
// shows what the Flow's own read costs. Only for this scenario's updates:
// the read fails for deletes, and its result is not posted.
func flowReadsItem(ctx context.Context, dx *directustest.Instance) error {
	var flows struct {
		Data []struct {
			ID        string `json:"id"`
			Operation string `json:"operation"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodGet, "/flows?fields=id,operation", nil, &flows); err != nil {
		return fmt.Errorf("-flow-read: %w", err)
	}
	for _, f := range flows.Data {
		var op struct {
			Data struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/operations", map[string]any{
			"name": "read the item", "key": "read_item", "type": "item-read", "flow": f.ID,
			"position_x": 1, "position_y": 20, "resolve": f.Operation,
			"options": map[string]any{"collection": "{{$trigger.collection}}", "key": "{{$trigger.keys}}", "permissions": "$full"},
		}, &op); err != nil {
			return fmt.Errorf("-flow-read: %w", err)
		}
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPatch, "/flows/"+f.ID, map[string]any{"operation": op.Data.ID}, nil); err != nil {
			return fmt.Errorf("-flow-read: %w", err)
		}
	}
	return nil
}
