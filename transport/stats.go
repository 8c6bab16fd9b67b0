package transport

import (
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

// stats are the hub's counters; the metrics read them at scrape time.
type stats struct {
	conns sync.Map // protocol name → *atomic.Int64
	// queuedBytes is the bytes of frames waiting for clients, in melody's
	// queues and the overflows.
	queuedBytes atomic.Int64
	evictions   sync.Map // reason → *atomic.Int64
	// panics counts frame handlers that panicked (contained).
	panics atomic.Int64
}

// protocol is the open-connection gauge of a protocol.
func (s *stats) protocol(name string) *atomic.Int64 {
	v, _ := s.conns.LoadOrStore(name, new(atomic.Int64))
	return v.(*atomic.Int64)
}

func add(m *sync.Map, key any) {
	v, _ := m.LoadOrStore(key, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// Snapshot copies a map of counters (key → *atomic.Int64).
func Snapshot[K comparable](m *sync.Map) map[K]int64 {
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
	case CloseSlowConsumer:
		return "slow_consumer"
	case websocket.ClosePolicyViolation:
		return "flood"
	case websocket.CloseGoingAway:
		return "shutdown"
	case CloseTokenExpired:
		return "token_expired"
	case websocket.CloseInternalServerErr:
		return "panic"
	}
	return "other"
}

// Stats is a copy of the hub's counters.
type Stats struct {
	// Connections by protocol (Codec.Name: "extension", "realtime").
	Connections map[string]int64
	// SendQueueBytes are the bytes of frames waiting for clients.
	SendQueueBytes int64
	// Evictions by reason: slow_consumer, flood, shutdown, token_expired,
	// panic.
	Evictions map[string]int64
	// Panics counts frame handlers that panicked (the connection closed,
	// the process went on).
	Panics int64
}

// Stats returns a copy of the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{
		Connections:    Snapshot[string](&h.stats.conns),
		SendQueueBytes: h.stats.queuedBytes.Load(),
		Evictions:      Snapshot[string](&h.stats.evictions),
		Panics:         h.stats.panics.Load(),
	}
}
