package handlers

import (
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// stats are the edge's counters; the metrics read them at scrape time.
type stats struct {
	seedConns, realtimeConns atomic.Int64
	// queuedBytes is the bytes of frames waiting for clients, in melody's
	// queues and the overflows.
	queuedBytes atomic.Int64
	evictions   sync.Map // reason → *atomic.Int64
	webhook     sync.Map // HTTP status → *atomic.Int64
	// panics counts frame handlers that panicked (contained).
	panics atomic.Int64
}

func add(m *sync.Map, key any) {
	v, _ := m.LoadOrStore(key, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func snapshot[K comparable](m *sync.Map) map[K]int64 {
	out := map[K]int64{}
	m.Range(func(k, v any) bool {
		out[k.(K)] = v.(*atomic.Int64).Load()
		return true
	})
	return out
}

// evictionReason names a close code for the metrics.
func evictionReason(code int) string {
	switch code {
	case closeSlowConsumer:
		return "slow_consumer"
	case websocket.ClosePolicyViolation:
		return "flood"
	case websocket.CloseGoingAway:
		return "shutdown"
	case closeTokenExpired:
		return "token_expired"
	case websocket.CloseInternalServerErr:
		return "panic"
	}
	return "other"
}

// Stats is a copy of the edge's counters.
type Stats struct {
	// Connections by protocol: "seed" (websocket_path), "realtime".
	Connections map[string]int64
	// SendQueueBytes are the bytes of frames waiting for clients.
	SendQueueBytes int64
	// Evictions by reason: slow_consumer, flood, shutdown, token_expired.
	Evictions map[string]int64
	// Webhook answers by HTTP status.
	Webhook map[int]int64
	// Panics counts frame handlers that panicked (the connection closed,
	// the process went on).
	Panics int64
}

// Stats returns a copy of the edge's counters.
func (s *Server) Stats() Stats {
	return Stats{
		Connections:    map[string]int64{"seed": s.stats.seedConns.Load(), "realtime": s.stats.realtimeConns.Load()},
		SendQueueBytes: s.stats.queuedBytes.Load(),
		Evictions:      snapshot[string](&s.stats.evictions),
		Webhook:        snapshot[int](&s.stats.webhook),
		Panics:         s.stats.panics.Load(),
	}
}

// protocolConns is the connection gauge of c's protocol.
func (s *Server) protocolConns(c *conn) *atomic.Int64 {
	if _, ok := c.codec.(*realtimeCodec); ok {
		return &s.stats.realtimeConns
	}
	return &s.stats.seedConns
}
