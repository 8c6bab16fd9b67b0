package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// ErrNoDelivery is wrapped by CheckDelivery's error when the Flow exists
// but no event reached the broker.
var ErrNoDelivery = errors.New("no event reached the broker")

// CheckDelivery proves the Flow delivers: it creates an item in collection,
// waits until the broker's broker_events_published_total grows, and deletes
// the item again. It returns an error wrapping ErrNoDelivery when no
// event arrives (or the broker's metrics cannot be read).
func CheckDelivery(ctx context.Context, client *directus.Client, token, collection, metricsURL string, timeout time.Duration, stdout io.Writer) error {
	hc := &http.Client{Timeout: 5 * time.Second}
	before, err := publishedEvents(ctx, hc, metricsURL)
	if err != nil {
		return fmt.Errorf("%w: check: cannot read the broker's metrics at %s: %w; is the broker running there? (--metrics-url if its /metrics is elsewhere)", ErrNoDelivery, metricsURL, err)
	}
	pk, err := directus.PrimaryKey(ctx, client, token, collection)
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	data, err := client.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"items", collection}, Token: token, Body: map[string]any{}})
	if err != nil {
		return fmt.Errorf("check: create a test item in %s: %w", collection, err)
	}
	var item map[string]json.RawMessage
	if err := json.Unmarshal(data, &item); err != nil || len(item[pk]) == 0 {
		return fmt.Errorf("check: create a test item in %s: the answer has no %s", collection, pk)
	}
	key := string(item[pk])
	if s, err := strconv.Unquote(key); err == nil {
		key = s
	}
	defer func() {
		// Clean up even when ctx was cancelled (Ctrl-C during the wait).
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := client.Do(dctx, directus.Request{Method: http.MethodDelete, Segments: []string{"items", collection, key}, Token: token}); err != nil {
			fmt.Fprintf(stdout, "check: could not delete test item %s/%s: %v\n", collection, key, err)
		}
	}()

	deadline := time.Now().Add(timeout)
	for {
		now, err := publishedEvents(ctx, hc, metricsURL)
		if err == nil && now > before {
			fmt.Fprintf(stdout, "check: test item %s/%s reached the broker (broker_events_published_total %d -> %d); deleting it\n", collection, key, before, now)
			return nil
		}
		if time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w: warning: no event reached the broker within %s of creating test item %s/%s: Directus could not reach the broker: if the broker runs on the same host as Directus, set IMPORT_IP_DENY_LIST=169.254.169.254 in Directus's environment (its default 0.0.0.0 denies every local address); also check the secret", ErrNoDelivery, timeout, collection, key)
}

// publishedEvents reads broker_events_published_total from the broker's
// Prometheus text.
func publishedEvents(ctx context.Context, hc *http.Client, metricsURL string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "broker_events_published_total "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("bad broker_events_published_total %q", v)
			}
			return int64(n), nil
		}
	}
	return 0, errors.New("no broker_events_published_total in the answer")
}
