package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// webhookSecret is the broker's WEBHOOK_SECRET in every scenario.
const webhookSecret = "bench-secret"

// poster sends item events to the broker's webhook as a Directus Flow
// would: {"event":"<c>.items.update","payload":{...},"keys":["<key>"],...}.
type poster struct {
	url    string
	client *http.Client
}

// newPoster makes a poster for the webhook at url. keepAlive false sends
// Connection: close and dials every request anew, as Directus Flows do.
func newPoster(url string, keepAlive bool, conns int) *poster {
	tr := &http.Transport{
		DialContext:         newSpreadDialer().DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		DisableKeepAlives:   !keepAlive,
		IdleConnTimeout:     time.Minute,
	}
	return &poster{url: url, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// body is the webhook body of an update of item key in collection.
func webhookBody(collection string, key int) []byte {
	b := make([]byte, 0, 128+2*len(collection))
	b = append(b, `{"event":"`...)
	b = append(b, collection...)
	b = append(b, `.items.update","payload":{"title":"bench"},"keys":["`...)
	b = strconv.AppendInt(b, int64(key), 10)
	b = append(b, `"],"collection":"`...)
	b = append(b, collection...)
	b = append(b, `"}`...)
	return b
}

// post sends one event and checks the 202.
func (p *poster) post(ctx context.Context, collection string, key int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(webhookBody(collection, key)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Webhook-Secret", webhookSecret)
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("webhook: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// close drops the idle connections.
func (p *poster) close() { p.client.CloseIdleConnections() }
