package directus

import (
	"context"
	"net/http"
	"sync/atomic"
)

// A storm of clients (reconnects, subscribes, CRUD) must not become a storm
// at Directus: past its capacity every request slows down, live event reads
// included, and Directus answers "under pressure". So the requests clients
// cause go through a bounded number of slots, the overflow waits in order,
// and beyond a bounded queue the client is told to retry at once instead of
// waiting for a timeout. Event reads are not limited here: they are bounded
// by the broker's read_concurrency and must never be shed.

type clientCausedKey struct{}

// ClientCaused marks ctx as the context of a request a client caused (a
// token check, a subscribe check, a snapshot, an items call): the client's
// limit applies to it.
func ClientCaused(ctx context.Context) context.Context {
	return context.WithValue(ctx, clientCausedKey{}, true)
}

func clientCaused(ctx context.Context) bool { v, _ := ctx.Value(clientCausedKey{}).(bool); return v }

// ErrBusy is the answer when more client requests wait for Directus than
// the queue holds.
var ErrBusy = &Error{Status: http.StatusServiceUnavailable, Code: "SERVICE_BUSY",
	Message: "the broker has too many requests waiting for Directus; retry in a moment"}

// limiter is a bounded set of slots with a bounded FIFO queue (a channel's
// blocked senders are served in order).
type limiter struct {
	slots   chan struct{}
	waiting atomic.Int64
	queue   int64
}

// Limit bounds the client-caused requests (see ClientCaused) to concurrency
// in flight and queue waiting; set it before use.
func (c *Client) Limit(concurrency, queue int) {
	c.limit = &limiter{slots: make(chan struct{}, concurrency), queue: int64(queue)}
}

func (l *limiter) acquire(ctx context.Context) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	if l.waiting.Add(1) > l.queue {
		l.waiting.Add(-1)
		return ErrBusy
	}
	defer l.waiting.Add(-1)
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *limiter) release() { <-l.slots }

// Waiting is how many client-caused requests wait for a slot.
func (c *Client) Waiting() int64 {
	if c.limit == nil {
		return 0
	}
	return c.limit.waiting.Load()
}
