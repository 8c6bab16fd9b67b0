package broker

import (
	"context"
	"encoding/json"
	"errors"
)

type clientAddrKey struct{}

// WithClientAddr marks ctx as a request made on behalf of a client at
// addr: Directus is told the address (X-Forwarded-For), so its per-client
// rate limits and ip_access apply to the client, not to the broker.
func WithClientAddr(ctx context.Context, addr string) context.Context {
	if addr == "" {
		return ctx
	}
	return context.WithValue(ctx, clientAddrKey{}, addr)
}

// ClientAddr is the address WithClientAddr put in ctx ("" none).
func ClientAddr(ctx context.Context) string { a, _ := ctx.Value(clientAddrKey{}).(string); return a }

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
