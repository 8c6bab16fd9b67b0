package handlers

import (
	"sync"
	"sync/atomic"

	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// Stats is a copy of the edge's counters.
type Stats struct {
	transport.Stats
	// Webhook answers by HTTP status.
	Webhook map[int]int64
}

// Stats returns a copy of the edge's counters.
func (s *Server) Stats() Stats {
	return Stats{Stats: s.hub.Stats(), Webhook: transport.Snapshot[int](&s.webhookAnswers)}
}

func count(m *sync.Map, key any) {
	v, _ := m.LoadOrStore(key, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}
