// Package metrics exposes the broker's figures to Prometheus with
// client_golang: the broker's and the edge's counters and gauges (read at
// scrape time from their snapshots, so the hot paths only bump atomics),
// latency histograms fed by small observer hooks, the Go runtime and
// process collectors, and the build.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Build identifies the binary.
type Build struct{ Version, Commit, GoVersion string }

// Sources are what the metrics read at scrape time.
type Sources struct {
	Broker func() broker.MetricsSnapshot
	Lag    func() time.Duration
	Edge   func() Edge
	// Failures are the operations that failed, by operation and code.
	Failures func() []Failure
	// PerUser counts classes made per user because something that decides
	// sharing could not be established, by reason.
	PerUser func() map[string]int64
	// DirectusWaiting is how many client-caused requests wait for a
	// Directus slot (directus_concurrency).
	DirectusWaiting func() int64
}

// Edge are the HTTP edge's and the connections' counters.
type Edge struct {
	// Connections by protocol ("extension", "realtime").
	Connections map[string]int64
	// SendQueueBytes are the bytes of frames waiting for clients.
	SendQueueBytes int64
	// Evictions by reason.
	Evictions map[string]int64
	// Webhook answers by HTTP status.
	Webhook map[int]int64
	// Panics counts frame handlers that panicked.
	Panics int64
}

// Failure counts the failures of an operation with an error code.
type Failure struct {
	Op, Code string
	N        int64
}

// Metrics is the broker's Prometheus registry.
type Metrics struct {
	reg      *prometheus.Registry
	delivery prometheus.Histogram
	directus *prometheus.HistogramVec
}

// New makes the registry; Serve it with Handler once Watch has been told
// where the figures come from.
func New(build Build) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.delivery = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "broker_delivery_seconds",
		Help: "Webhook received to the event's frame queued for the last subscriber that gets it, per event (the broker's own latency, Directus reads included).",
		// 1 ms to ~33 s.
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	m.directus = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "broker_directus_request_seconds",
		Help:    "Requests to Directus by kind (read: deliveries; snapshot; check: subscribe checks; auth: token checks and logins; model: the permission model; crud; schema; health) and outcome (ok, denied: 401/403, not_found, client_error, server_error: 5xx, timeout, unavailable).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"kind", "outcome"})
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "broker_build_info",
		Help:        "The broker's build: version, commit and Go version as labels; always 1.",
		ConstLabels: prometheus.Labels{"version": build.Version, "commit": build.Commit, "goversion": build.GoVersion},
	})
	info.Set(1)
	m.reg.MustRegister(m.delivery, m.directus, info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Delivered implements broker.Observer.
func (m *Metrics) Delivered(d time.Duration) { m.delivery.Observe(d.Seconds()) }

// DirectusRequest is the directus.Observer of the broker's client.
func (m *Metrics) DirectusRequest(kind, outcome string, d time.Duration) {
	m.directus.WithLabelValues(kind, outcome).Observe(d.Seconds())
}

// Watch registers the counters and gauges read from src at scrape time.
func (m *Metrics) Watch(src Sources) { m.reg.MustRegister(&snapshots{src: src}) }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// snapshots is a collector over the broker's and the edge's snapshots.
type snapshots struct{ src Sources }

var (
	descConnections   = prometheus.NewDesc("broker_connections", "Open WebSocket connections by protocol (extension: websocket_path, realtime: realtime_path).", []string{"protocol"}, nil)
	descSubscriptions = prometheus.NewDesc("broker_subscriptions", "Subscriptions attached.", nil, nil)
	descGroups        = prometheus.NewDesc("broker_groups", "Read groups: distinct (access class, collection, query); one Directus read per group and event.", nil, nil)
	descQueue         = prometheus.NewDesc("broker_dispatch_queue_depth", "Events received and waiting for the dispatch workers.", nil, nil)
	descLag           = prometheus.NewDesc("broker_dispatch_lag_seconds", "Age of the oldest event received and not yet dispatched (0: none waits): how far behind the broker is.", nil, nil)
	descHeldBytes     = prometheus.NewDesc("broker_held_bytes", "Bytes of live frames held back while subscriptions are set up (ack, replay, snapshot first); bounded by held_bytes.", nil, nil)
	descSendBytes     = prometheus.NewDesc("broker_send_queue_bytes", "Bytes of frames waiting to be written to clients.", nil, nil)
	descPublished     = prometheus.NewDesc("broker_events_published_total", "Events accepted by the webhook and published to the bus.", nil, nil)
	descDispatched    = prometheus.NewDesc("broker_events_dispatched_total", "Events dispatched to subscribers by this instance.", nil, nil)
	descReads         = prometheus.NewDesc("broker_reads_total", "Directus reads made for deliveries (one per group and event batch).", nil, nil)
	descReadErrors    = prometheus.NewDesc("broker_read_errors_total", "Delivery reads that failed.", nil, nil)
	descFrames        = prometheus.NewDesc("broker_frames_sent_total", "Event frames queued for subscribers.", nil, nil)
	descMissed        = prometheus.NewDesc("broker_events_missed_total", "EVENTS_MISSED: events a subscriber was told it did not get (a failed read, a refused token).", nil, nil)
	descGaps          = prometheus.NewDesc("broker_history_gaps_total", "Resumes (since) told the history no longer holds their event (HISTORY_GAP).", nil, nil)
	descAccess        = prometheus.NewDesc("broker_access_changes_total", "Changes of access (events of users, roles, policies, access, permissions, relations) applied.", nil, nil)
	descRegrouped     = prometheus.NewDesc("broker_regrouped_total", "Subscriptions moved to another access class by access changes and refreshes.", nil, nil)
	descEvicted       = prometheus.NewDesc("broker_slow_consumers_evicted_total", "Clients disconnected because more than send_queue_bytes waited for them (4008).", nil, nil)
	descEvictions     = prometheus.NewDesc("broker_evictions_total", "Connections the broker closed, by reason (slow_consumer, pong_timeout, flood, shutdown, token_expired, panic).", []string{"reason"}, nil)
	descWebhook       = prometheus.NewDesc("broker_webhook_requests_total", "Webhook answers by HTTP status.", []string{"status"}, nil)
	descFailures      = prometheus.NewDesc("broker_operation_failures_total", "Client operations (connect, auth, subscribe, items) that failed, by the error code the client was answered (LIMIT_EXCEEDED, SERVICE_BUSY, SERVICE_UNAVAILABLE...).", []string{"operation", "code"}, nil)
	descWaiting       = prometheus.NewDesc("broker_directus_queue_waiting", "Client-caused Directus requests waiting for one of directus_concurrency slots (past directus_queue: SERVICE_BUSY).", nil, nil)
	descPerUser       = prometheus.NewDesc("broker_class_per_user_total", "Access classes made per user (fail closed) because something that decides sharing could not be established, by reason (model_unavailable, user_unknown, role_claim, ip_access, version, user_field).", []string{"reason"}, nil)
	descApart         = prometheus.NewDesc("broker_apart_reads_total", "Parts of groups read apart (each with its own token) while an access change that concerns them was pending.", nil, nil)
	descClusterResult = prometheus.NewDesc("broker_cluster_results_total", "Events delivered from the read another instance made for the same group (cluster_reads).", nil, nil)
	descClusterTake   = prometheus.NewDesc("broker_cluster_takeovers_total", "Batches read here because the reader instance's results did not come within cluster_read_timeout.", nil, nil)
	descPanics        = prometheus.NewDesc("broker_frame_panics_total", "Frame handlers that panicked: the connection was closed (1011), the process went on.", nil, nil)
)

func (s *snapshots) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descSubscriptions, descGroups, descQueue, descLag, descSendBytes, descHeldBytes,
		descPublished, descDispatched, descReads, descReadErrors, descFrames, descMissed, descGaps, descAccess, descRegrouped,
		descEvicted, descEvictions, descWebhook, descPanics, descFailures, descWaiting, descPerUser, descApart, descClusterResult, descClusterTake} {
		ch <- d
	}
}

func (s *snapshots) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if s.src.Broker != nil {
		b := s.src.Broker()
		gauge(descSubscriptions, float64(b.Subscriptions))
		gauge(descGroups, float64(b.Groups))
		gauge(descQueue, float64(b.QueueDepth))
		gauge(descHeldBytes, float64(b.HeldBytes))
		counter(descPublished, float64(b.EventsPublished))
		counter(descDispatched, float64(b.EventsDispatched))
		counter(descReads, float64(b.Reads))
		counter(descReadErrors, float64(b.ReadErrors))
		counter(descFrames, float64(b.FramesSent))
		counter(descMissed, float64(b.EventsMissed))
		counter(descGaps, float64(b.HistoryGaps))
		counter(descAccess, float64(b.AccessChanges))
		counter(descRegrouped, float64(b.Regrouped))
		counter(descApart, float64(b.ApartReads))
		counter(descClusterResult, float64(b.ClusterResults))
		counter(descClusterTake, float64(b.ClusterTakeovers))
	}
	if s.src.PerUser != nil {
		for reason, n := range s.src.PerUser() {
			counter(descPerUser, float64(n), reason)
		}
	}
	if s.src.Failures != nil {
		for _, f := range s.src.Failures() {
			counter(descFailures, float64(f.N), f.Op, f.Code)
		}
	}
	if s.src.DirectusWaiting != nil {
		gauge(descWaiting, float64(s.src.DirectusWaiting()))
	}
	if s.src.Lag != nil {
		gauge(descLag, s.src.Lag().Seconds())
	}
	if s.src.Edge != nil {
		e := s.src.Edge()
		for _, p := range []string{"extension", "realtime"} {
			gauge(descConnections, float64(e.Connections[p]), p)
		}
		gauge(descSendBytes, float64(e.SendQueueBytes))
		counter(descEvicted, float64(e.Evictions["slow_consumer"]))
		counter(descPanics, float64(e.Panics))
		for _, r := range []string{"slow_consumer", "pong_timeout", "flood", "shutdown", "token_expired", "panic"} {
			counter(descEvictions, float64(e.Evictions[r]), r)
		}
		for status, n := range e.Webhook {
			counter(descWebhook, float64(n), strconv.Itoa(status))
		}
	}
}
