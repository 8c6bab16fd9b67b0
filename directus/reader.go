package directus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Reader implements broker.Reader over the items API.
type Reader struct {
	Client *Client
}

var _ broker.Reader = (*Reader)(nil)

// ReadItems implements broker.Reader: one GET /items/<collection>/<key> per
// key (Directus applies the query's filter to single-item reads and answers
// 403 for an item the token may not read or the filter excludes).
func (r *Reader) ReadItems(ctx context.Context, token, collection string, keys []string, q broker.Query) (map[string]json.RawMessage, error) {
	params, err := QueryValues(q)
	if err != nil {
		return nil, err
	}
	// Paging parameters make no sense for one item and Directus may refuse them.
	for _, p := range []string{"limit", "offset", "page", "meta", "search", "sort"} {
		params.Del(p)
	}
	out := make(map[string]json.RawMessage, len(keys))
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
	)
	read := func(key string) {
		data, err := r.Client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"items", collection, key}, Query: params, Token: token})
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil && len(data) > 0 && string(data) != "null":
			out[key] = data
		case err == nil:
		case hidden(err):
		case firstErr == nil:
			firstErr = err
		}
	}
	if len(keys) == 1 {
		read(keys[0])
	} else {
		sem := make(chan struct{}, 8)
		for _, k := range keys {
			wg.Add(1)
			sem <- struct{}{}
			go func() { defer func() { <-sem; wg.Done() }(); read(k) }()
		}
		wg.Wait()
	}
	if firstErr != nil {
		return nil, readError(collection, firstErr)
	}
	return out, nil
}

// ReadSnapshot implements broker.Reader.
func (r *Reader) ReadSnapshot(ctx context.Context, token, collection string, q broker.Query) (json.RawMessage, error) {
	params, err := QueryValues(q)
	if err != nil {
		return nil, err
	}
	data, err := r.Client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"items", collection}, Query: params, Token: token})
	if err != nil {
		return nil, readError(collection, err)
	}
	return data, nil
}

// hidden reports whether err only means "this token cannot see this item".
func hidden(err error) bool {
	var de *Error
	return errors.As(err, &de) && (de.Status == http.StatusForbidden || de.Status == http.StatusNotFound)
}

func readError(collection string, err error) error {
	var de *Error
	if errors.As(err, &de) && de.Status == http.StatusUnauthorized {
		return fmt.Errorf("read %s: %w: %w", collection, broker.ErrTokenExpired, err)
	}
	return fmt.Errorf("read %s: %w", collection, err)
}
