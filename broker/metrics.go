package broker

import "sync/atomic"

// Metrics counts what the broker does; all fields are safe for concurrent use.
type Metrics struct {
	EventsPublished  atomic.Int64
	EventsDispatched atomic.Int64
	// Reads counts item reads made for deliveries: one per event per group.
	Reads        atomic.Int64
	ReadErrors   atomic.Int64
	FramesSent   atomic.Int64
	EventsMissed atomic.Int64
	// AccessChanges counts access events applied; Regrouped the
	// subscriptions they (or refreshes) moved to another class.
	AccessChanges atomic.Int64
	Regrouped     atomic.Int64
	// HistoryGaps counts resumes told the history no longer holds their id.
	HistoryGaps atomic.Int64
	// ApartReads counts the parts of groups read apart while an access
	// change was pending (see doubt.go).
	ApartReads atomic.Int64
	// ClusterResults counts events delivered from another instance's read
	// (issue 24); ClusterTakeovers the batches read here because the
	// reader's results did not come in time.
	ClusterResults   atomic.Int64
	ClusterTakeovers atomic.Int64
}

// MetricsSnapshot is a copy of Metrics at one moment.
type MetricsSnapshot struct {
	EventsPublished, EventsDispatched, Reads, ReadErrors, FramesSent, EventsMissed int64
	AccessChanges, Regrouped, HistoryGaps, ApartReads                              int64
	ClusterResults, ClusterTakeovers                                               int64
	Subscriptions, Groups                                                          int
	// QueueDepth is the number of events waiting for the dispatch workers.
	QueueDepth int
	// HeldBytes are the live frames held back while subscriptions are set up.
	HeldBytes int64
}
