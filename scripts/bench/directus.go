package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// prepareCollection creates collection (id + title) in the real Directus
// with n items and returns the first item id; the ids are consecutive.
func prepareCollection(ctx context.Context, dx *directustest.Instance, collection string, n int) (int, error) {
	if err := dx.CreateCollection(ctx, collection, directustest.Field{Name: "title"}); err != nil {
		return 0, fmt.Errorf("create collection %s: %w", collection, err)
	}
	items := make([]map[string]any, n)
	for i := range items {
		items[i] = map[string]any{"title": "item " + strconv.Itoa(i)}
	}
	var out struct {
		Data []struct {
			ID int `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/items/"+collection+"?fields=id", items, &out); err != nil {
		return 0, fmt.Errorf("create %d items in %s: %w", n, collection, err)
	}
	ids := make([]int, len(out.Data))
	for i, d := range out.Data {
		ids[i] = d.ID
	}
	slices.Sort(ids)
	if len(ids) != n || ids[n-1]-ids[0] != n-1 {
		return 0, fmt.Errorf("create items in %s: got %d ids, not %d consecutive ones", collection, len(ids), n)
	}
	return ids[0], nil
}

// readTimes times n sequential reads of one item straight from Directus
// with the admin token: what the broker's one read per event costs.
func readTimes(ctx context.Context, dx *directustest.Instance, collection string, key, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodGet, "/items/"+collection+"/"+strconv.Itoa(key), nil, nil); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}
