package broker

import (
	"context"
	"encoding/json"
	"errors"
)

// Reader reads items from Directus with a subscriber's own token, so that a
// delivery holds exactly what that token may read.
type Reader interface {
	// ReadItems reads the given keys of collection as token ("" = public),
	// shaped and filtered by q. The result holds each key the token may read
	// and q selects; a key it may not read is simply absent.
	ReadItems(ctx context.Context, token, collection string, keys []string, q Query) (map[string]json.RawMessage, error)
	// ReadSnapshot reads the items q selects, as a JSON array (or object
	// for singletons).
	ReadSnapshot(ctx context.Context, token, collection string, q Query) (json.RawMessage, error)
}

// ErrTokenExpired is wrapped by Reader errors when Directus refused the
// token itself (expired or revoked), as opposed to the items.
var ErrTokenExpired = errors.New("token expired or invalid")
