package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

const webhookSecret = "chaos-webhook-secret"

// publisher posts item events to a broker's webhook and keeps, per
// collection, the ids the broker acknowledged (202) in order.
type publisher struct {
	url    string
	client *http.Client

	mu    sync.Mutex
	acked map[string][]string
	// refused counts answers other than 202 by status; unanswered are when
	// calls failed that got no answer after they were sent (EOF, reset).
	refused    map[int]int
	unanswered []time.Time
	lastErr    error
	// firstRefused is when a dial was first refused.
	firstRefused time.Time
	// sent is when each acknowledged id was posted.
	sent map[string]time.Time
}

// newPublisher posts to url; keepAlive false opens a connection per call,
// so a refused dial (listener closed) is told apart from a call that was
// sent and never answered.
func newPublisher(url string, keepAlive bool) *publisher {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = !keepAlive
	return &publisher{url: url, client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
		acked: map[string][]string{}, refused: map[int]int{}, sent: map[string]time.Time{}}
}

// errRefused is a call that never reached the broker (nothing listens).
var errRefused = errors.New("connection refused")

// post sends one update event of collection's item key; it returns the
// event id when acknowledged.
func (p *publisher) post(ctx context.Context, collection string, key int) (string, error) {
	body := fmt.Sprintf(`{"event":"%s.items.update","payload":{"title":"t %d"},"keys":["%d"],"collection":"%s"}`, collection, key, key, collection)
	return p.postBody(ctx, collection, body)
}

// postBody sends one event of collection as body (what a Flow posts); it
// returns the event id when acknowledged.
func (p *publisher) postBody(ctx context.Context, collection, body string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Secret", webhookSecret)
	start := time.Now()
	resp, err := p.client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			p.mu.Lock()
			if p.firstRefused.IsZero() {
				p.firstRefused = time.Now()
			}
			p.mu.Unlock()
			return "", errRefused
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		p.mu.Lock()
		p.unanswered = append(p.unanswered, time.Now())
		p.lastErr = err
		p.mu.Unlock()
		return "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	p.mu.Lock()
	defer p.mu.Unlock()
	if resp.StatusCode != http.StatusAccepted {
		p.refused[resp.StatusCode]++
		return "", fmt.Errorf("webhook: HTTP %d", resp.StatusCode)
	}
	var out struct{ IDs []string }
	if json.Unmarshal(raw, &out) != nil || len(out.IDs) != 1 {
		return "", fmt.Errorf("webhook: 202 without an id: %s", raw)
	}
	p.acked[collection] = append(p.acked[collection], out.IDs[0])
	p.sent[out.IDs[0]] = start
	return out.IDs[0], nil
}

// ackedOf is a copy of the ids acknowledged for collection.
func (p *publisher) ackedOf(collection string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.acked[collection]...)
}

// sentAt is when the acknowledged event id was posted.
func (p *publisher) sentAt(id string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[id]
}

// run posts events to collections' keys at rate per second until ctx ends,
// round robin; errors (refusals during an outage) are counted, not fatal.
func (p *publisher) run(ctx context.Context, rate int, collections []string, keys map[string][]int) {
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		coll := collections[i%len(collections)]
		ks := keys[coll]
		_, _ = p.post(ctx, coll, ks[i%len(ks)])
	}
}

// unansweredCalls splits the calls that got no answer into those that
// failed when the listener closed (within 20 ms of the first refused dial:
// connections the kernel had queued and the broker never accepted, which
// TCP resets) and the others.
func (p *publisher) unansweredCalls() (atClose, others int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.unanswered {
		if d := t.Sub(p.firstRefused); !p.firstRefused.IsZero() && d > -20*time.Millisecond && d < 20*time.Millisecond {
			atClose++
		} else {
			others++
		}
	}
	return atClose, others
}
