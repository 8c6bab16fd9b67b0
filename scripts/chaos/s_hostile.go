package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// victim is one subscriber whose latency (webhook POST → its frame) the
// hostile scenario watches.
type victim struct {
	sub   *subscriber
	pub   *publisher
	coll  string
	keys  []int
	mu    sync.Mutex
	wants map[string]chan time.Time
}

func (v *victim) arrived(id string, at time.Time) {
	v.mu.Lock()
	ch := v.wants[id]
	delete(v.wants, id)
	v.mu.Unlock()
	if ch != nil {
		ch <- at
	}
}

// sample posts n events one after the other and returns each one's
// latency to the victim; an event that does not arrive within 30 s counts
// as 30 s.
func (v *victim) sample(ctx context.Context, n int) ([]time.Duration, error) {
	var out []time.Duration
	for i := range n {
		ch := make(chan time.Time, 1)
		start := time.Now()
		// The id is known only from the answer, and the frame can come
		// first: register under a placeholder and move it.
		id, err := v.pub.post(ctx, v.coll, v.keys[i%len(v.keys)])
		if err != nil {
			return nil, err
		}
		v.mu.Lock()
		v.sub.mu.Lock()
		at, already := v.sub.got[id]
		v.sub.mu.Unlock()
		if !already {
			v.wants[id] = ch
		}
		v.mu.Unlock()
		if !already {
			select {
			case at = <-ch:
			case <-time.After(30 * time.Second):
				at = start.Add(30 * time.Second)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		out = append(out, at.Sub(start))
		if err := wait(ctx, 50*time.Millisecond); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func p99(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*99/100)]
}

// attack is one hostile client population: start it, and stop it
// (returning a description of what it achieved).
type attack struct {
	name  string
	start func(ctx context.Context) (stop func() string, err error)
	// rssBound, when set, is the most the broker's RSS may grow by while
	// the attack runs.
	rssBound int64
}

// hostile measures the victim alone, then under each attack.
func (c *chaos) hostile(ctx context.Context) error {
	const coll = "chaos_hostile"
	w, err := newWorld(ctx, c.dx, "hostile", coll, 50, max(5, c.sz.users))
	if err != nil {
		return err
	}
	b, err := c.startBroker(ctx, strings.Fields(os.Getenv("CHAOS_BROKER_ENV"))...)
	if err != nil {
		return err
	}
	defer b.kill()
	v := &victim{pub: newPublisher(b.webhookURL(), true), coll: coll, keys: w.keys[coll], wants: map[string]chan time.Time{}}
	if v.sub, err = subscribe(ctx, b.wsURL(), w.users[0], coll, "", nil, v.arrived); err != nil {
		return err
	}
	defer v.sub.close()
	if _, err := v.sample(ctx, 5); err != nil { // warm up
		return err
	}
	base, err := v.sample(ctx, c.sz.phase)
	if err != nil {
		return err
	}
	c.rep.target("hostile", "victim alone: p50 / p99", fmt.Sprintf("%.1f / %.1f ms", ms(p50(base)), ms(p99(base))), true)
	attacker := w.users[1:]
	attacks := []attack{
		{name: "distinct queries (4 sockets × 256 filters differing by one id)", start: func(ctx context.Context) (func() string, error) {
			return c.distinctQueries(ctx, b, attacker[0], coll, 4, 256)
		}},
		{name: "huge queries (3 sockets × 256 queries of 12 KB)", rssBound: 3*256<<10 + 32<<20, start: func(ctx context.Context) (func() string, error) {
			return c.hugeQueries(ctx, b, attacker[1], coll, 3, 256)
		}},
		{name: "connection hoarding: one token, 200 sockets that never authenticate", start: func(ctx context.Context) (func() string, error) {
			return c.hoard(ctx, b, attacker[2], w.users[0])
		}},
		{name: "connect-subscribe-close storm at 800/s, good and bad tokens", start: func(ctx context.Context) (func() string, error) {
			return c.storm(ctx, b, attacker, coll)
		}},
		{name: "malformed frame flood (4 sockets)", start: func(ctx context.Context) (func() string, error) {
			return c.flood(ctx, b, attacker[3], 4)
		}},
		// The victim's own token: the same group, so no read more than
		// alone; only the stalling is measured.
		{name: "50 subscribers that stop reading (default buffers)", start: func(ctx context.Context) (func() string, error) {
			return c.stalled(ctx, b, w.users[:1], coll, 50)
		}},
	}
	for _, a := range attacks {
		c.log("attack: %s", a.name)
		before := b.rss()
		readsBefore := b.metric("broker_directus_request_seconds_count", `kind="read"`)
		readTimeBefore := b.metric("broker_directus_request_seconds_sum", `kind="read"`)
		actx, cancel := context.WithCancel(ctx)
		stop, err := a.start(actx)
		if err != nil {
			cancel()
			c.rep.must("hostile", a.name, err.Error(), false)
			continue
		}
		during, err := v.sample(ctx, c.sz.phase)
		if os.Getenv("CHAOS_DEBUG") != "" {
			c.log("samples: %v", during)
		}
		grown := b.rss() - before
		reads := b.metric("broker_directus_request_seconds_count", `kind="read"`) - readsBefore
		readTime := b.metric("broker_directus_request_seconds_sum", `kind="read"`) - readTimeBefore
		what := stop()
		cancel()
		what += fmt.Sprintf("; %.0f Directus reads, %.1f ms each", reads, 1000*readTime/max(reads, 1))
		if err != nil {
			return err
		}
		c.rep.target("hostile", a.name+": victim p50 ≤ 2× alone", fmt.Sprintf("%.1f ms (p99 %.1f); %s", ms(p50(during)), ms(p99(during)), what), p50(during) <= 2*p50(base))
		if a.rssBound > 0 {
			c.rep.must("hostile", a.name+": broker RSS growth bounded", fmt.Sprintf("%.1f MiB (bound %.1f MiB)", float64(grown)/(1<<20), float64(a.rssBound)/(1<<20)), grown <= a.rssBound)
		}
		if !b.settle(30 * time.Second) {
			return fmt.Errorf("the broker did not settle after an attack: %s", b.state())
		}
	}
	v.sub.mu.Lock()
	missed := len(v.sub.starts) + len(v.sub.missedIDs)
	v.sub.mu.Unlock()
	c.rep.must("hostile", "the victim never missed an event", fmt.Sprintf("%d EVENTS_MISSED", missed), missed == 0)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rawSocket is an attacker's connection: it reads and discards.
func rawSocket(ctx context.Context, url, token string, d *websocket.Dialer) (*websocket.Conn, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ws, resp, err := d.DialContext(ctx, url, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil, err
	}
	return ws, nil
}

// counted reads frames off ws until it closes, counting them by type and
// code.
func counted(ws *websocket.Conn, counts *sync.Map) {
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			return
		}
		key := "frame"
		if i := strings.Index(string(msg), `"code":"`); i >= 0 {
			rest := string(msg[i+8:])
			key = rest[:strings.IndexByte(rest, '"')]
		}
		v, _ := counts.LoadOrStore(key, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
}

func countsString(counts *sync.Map) string {
	var parts []string
	counts.Range(func(k, v any) bool {
		parts = append(parts, fmt.Sprintf("%s %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func (c *chaos) distinctQueries(ctx context.Context, b *brokerProc, token, coll string, sockets, per int) (func() string, error) {
	flood, err := subscribeFlood(ctx, b, token, coll, sockets, per, func(s, i int) map[string]any {
		return map[string]any{"filter": map[string]any{"id": map[string]any{"_eq": s*per + i}}}
	})
	if err != nil {
		return nil, err
	}
	return func() string {
		groups := b.metric("broker_groups")
		return fmt.Sprintf("%.0f read groups; answers: %s", groups, flood())
	}, nil
}

func (c *chaos) hugeQueries(ctx context.Context, b *brokerProc, token, coll string, sockets, per int) (func() string, error) {
	big := strings.Repeat("x", 12<<10) // as large as Directus takes in a URL
	flood, err := subscribeFlood(ctx, b, token, coll, sockets, per, func(_, i int) map[string]any {
		return map[string]any{"filter": map[string]any{"title": map[string]any{"_neq": fmt.Sprint(i, big)}}}
	})
	if err != nil {
		return nil, err
	}
	return func() string { return "answers: " + flood() }, nil
}

// subscribeFlood opens sockets sockets as token, each subscribing per times
// to coll with query(socket, i), paced within the rate limit. The returned
// func closes them and tells the answers they got.
func subscribeFlood(ctx context.Context, b *brokerProc, token, coll string, sockets, per int, query func(s, i int) map[string]any) (func() string, error) {
	var conns []*websocket.Conn
	counts := &sync.Map{}
	for s := range sockets {
		ws, err := rawSocket(ctx, b.wsURL(), token, &dialer)
		if err != nil {
			return nil, err
		}
		conns = append(conns, ws)
		go counted(ws, counts)
		go func() {
			for i := range per {
				_ = ws.WriteJSON(map[string]any{"type": "subscribe", "collection": coll, "uid": fmt.Sprint(i), "query": query(s, i)})
				time.Sleep(25 * time.Millisecond) // within the rate limit
			}
		}()
	}
	return func() string {
		for _, ws := range conns {
			ws.Close()
		}
		return countsString(counts)
	}, nil
}

func (c *chaos) hoard(ctx context.Context, b *brokerProc, token, victimToken string) (func() string, error) {
	var conns []*websocket.Conn
	mine, anon, refused := 0, 0, 0
	for range 100 {
		ws, err := rawSocket(ctx, b.wsURL(), token, &dialer)
		if err != nil {
			refused++
			continue
		}
		mine++
		conns = append(conns, ws)
	}
	for range 200 {
		ws, err := rawSocket(ctx, b.realtimeURL(), "", &dialer)
		if err != nil {
			refused++
			continue
		}
		anon++
		conns = append(conns, ws)
	}
	// Another user still gets in.
	ws, err := rawSocket(ctx, b.wsURL(), victimToken, &dialer)
	other := err == nil
	if other {
		ws.Close()
	}
	c.rep.must("hostile", "connection hoarding: another user still connects", fmt.Sprintf("one token held %d, %d anonymous sockets held, %d refused", mine, anon, refused), other)
	return func() string {
		for _, ws := range conns {
			ws.Close()
		}
		return fmt.Sprintf("%d connections of one token, %d unauthenticated, %d refused", mine, anon, refused)
	}, nil
}

func (c *chaos) storm(ctx context.Context, b *brokerProc, tokens []string, coll string) (func() string, error) {
	var cycles, failed atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			// 8 × 100 = 800 cycles a second: the rate that made Directus
			// unreachable for 25 s (issue 15.6).
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ctx.Err() == nil; i++ {
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
				token := tokens[(g+i)%len(tokens)]
				if g%2 == 1 {
					token = fmt.Sprintf("bad-token-%d-%d", g, i) // never the same: no cache helps
				}
				ws, err := rawSocket(ctx, b.wsURL(), token, &d)
				if err != nil {
					failed.Add(1)
					continue
				}
				_ = ws.WriteJSON(map[string]any{"type": "subscribe", "collection": coll, "uid": "s"})
				_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _, _ = ws.ReadMessage()
				ws.Close()
				cycles.Add(1)
			}
		}()
	}
	start := time.Now()
	return func() string {
		cancel()
		wg.Wait()
		secs := time.Since(start).Seconds()
		return fmt.Sprintf("%.0f cycles/s, %.0f refused/s, %.0f sheds (SERVICE_BUSY)", float64(cycles.Load())/secs, float64(failed.Load())/secs,
			b.metric("broker_directus_request_seconds_count", `outcome="shed"`))
	}, nil
}

func (c *chaos) flood(ctx context.Context, b *brokerProc, token string, sockets int) (func() string, error) {
	counts := &sync.Map{}
	var conns []*websocket.Conn
	var sent atomic.Int64
	ctx, cancel := context.WithCancel(ctx)
	for range sockets {
		ws, err := rawSocket(ctx, b.wsURL(), token, &dialer)
		if err != nil {
			cancel()
			return nil, err
		}
		conns = append(conns, ws)
		go counted(ws, counts)
		go func() {
			for ctx.Err() == nil {
				if ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","collection":`)) != nil {
					return
				}
				sent.Add(1)
			}
		}()
	}
	start := time.Now()
	return func() string {
		cancel()
		secs := time.Since(start).Seconds()
		for _, ws := range conns {
			ws.Close()
		}
		return fmt.Sprintf("%.0f malformed frames/s sent; answers: %s", float64(sent.Load())/secs, countsString(counts))
	}, nil
}

func (c *chaos) stalled(ctx context.Context, b *brokerProc, tokens []string, coll string, n int) (func() string, error) {
	var conns []*websocket.Conn
	for i := range n {
		ws, err := rawSocket(ctx, b.wsURL(), tokens[i%len(tokens)], &dialer)
		if err != nil {
			return nil, err
		}
		if err := ws.WriteJSON(map[string]any{"type": "subscribe", "collection": coll, "uid": "s"}); err != nil {
			return nil, err
		}
		conns = append(conns, ws) // never read again
	}
	evicted := b.metric("broker_slow_consumers_evicted_total")
	return func() string {
		now := b.metric("broker_slow_consumers_evicted_total")
		for _, ws := range conns {
			ws.Close()
		}
		return fmt.Sprintf("%.0f evicted as slow consumers", now-evicted)
	}, nil
}
