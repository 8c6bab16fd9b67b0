package broker

import (
	"encoding/json"
	"sync"
	"sync/atomic"
)

// Query is a Directus items query (fields, filter, deep...) as a JSON object.
type Query map[string]any

// Key is a canonical text form of q: equal queries give equal keys, so
// subscriptions with the same query share one group and one read.
func (q Query) Key() string {
	if len(q) == 0 {
		return ""
	}
	b, err := json.Marshal(q) // encoding/json sorts map keys
	if err != nil {
		return "!" // unreachable for queries decoded from JSON
	}
	return string(b)
}

// ActionSet selects the actions a subscription receives; zero means all.
type ActionSet uint8

// Has reports whether a is in s (the empty set holds every action).
func (s ActionSet) Has(a Action) bool {
	return s == 0 || s&actionBit(a) != 0
}

// With returns s plus a.
func (s ActionSet) With(a Action) ActionSet { return s | actionBit(a) }

func actionBit(a Action) ActionSet {
	switch a {
	case ActionCreate:
		return 1
	case ActionUpdate:
		return 2
	case ActionDelete:
		return 4
	}
	return 0
}

// Sink is the connection a subscription delivers to. Send must not block:
// a sink that cannot keep up disconnects its client itself.
type Sink interface {
	Send(frame []byte)
	// TokenExpired is called when Directus refused token during a read
	// made for the sink (the sink may have switched tokens meanwhile).
	TokenExpired(token string)
}

// Encoder turns deliveries into wire frames for one protocol. Each distinct
// (encoder, uid) pair is encoded once per group and event.
type Encoder interface {
	Event(d *Delivery, uid json.RawMessage) []byte
	// Ack is the first frame of a subscription, sent once it is attached and
	// its replay and snapshot were read (nil: none). snapshot tells whether
	// an Init frame follows.
	Ack(s *Subscription, snapshot bool) []byte
	// Init carries the snapshot: the items the subscription starts from.
	Init(s *Subscription, data json.RawMessage) []byte
	Notice(s *Subscription, n Notice) []byte
}

// Notice tells a subscriber about events it could not receive.
type Notice struct {
	// Code is EVENTS_MISSED (a read for it failed, its token was refused,
	// or too many events arrived while it was being set up) or HISTORY_GAP
	// (a resume reached past the kept history).
	Code    string
	Message string
	EventID string
	// Count of events missed, when known.
	Count int
	// IDs lists the events missed, when known (a shutdown).
	IDs []string
}

// Subscription is one client's interest in one collection.
type Subscription struct {
	Collection string
	// UID is the client's own identifier, echoed in every frame.
	UID     json.RawMessage
	Query   Query
	Actions ActionSet
	Sink    Sink
	Encoder Encoder

	cred     atomic.Pointer[Credentials]
	queryKey string
	group    *group // guarded by the index lock
	// sendMu orders frames with the end of the subscription: a frame is
	// queued under it only while s is open, and Unsubscribe closes s under
	// it, so nothing follows the client's UNSUBSCRIBED.
	sendMu sync.Mutex
	closed atomic.Bool
	// suspended is set while the subscription's token is refused: it gets
	// notices of what it missed instead of data read with other members'
	// tokens, until it is rebound to a working token.
	suspended atomic.Bool
	// missing is set once a suspended s was told it misses events; Rebind
	// clears it.
	missing atomic.Bool
	// lastSent is the id of the newest event frame queued for s (held or
	// sent): what a shutdown reports as missed starts after it.
	lastSent atomic.Pointer[string]
	held     holdQueue
	// snapshot holds the keys of the init snapshot, for dropping the
	// duplicate creates that follow it (nil: no snapshot).
	snapshot atomic.Pointer[initKeys]
}

// NewSubscription makes a subscription reading with cred.
func NewSubscription(collection string, cred Credentials, q Query, actions ActionSet, uid json.RawMessage, sink Sink, enc Encoder) *Subscription {
	s := &Subscription{Collection: collection, UID: uid, Query: q, Actions: actions, Sink: sink, Encoder: enc, queryKey: q.Key()}
	s.cred.Store(&cred)
	return s
}

// Token is the Directus token the subscription reads with.
func (s *Subscription) Token() string { return s.cred.Load().Token }

// Credentials are what the subscription reads with.
func (s *Subscription) Credentials() Credentials { return *s.cred.Load() }

// Delivery is one event as one group may see it.
type Delivery struct {
	Event Event
	// Keys are the event's keys this group may read (all keys for deletes
	// that are not known to be hidden).
	Keys []string
	// Payload is the event payload restricted to what the group reads.
	Payload json.RawMessage
	// Data holds the items as the group's query reads them (create and
	// update), or the keys (delete).
	Data json.RawMessage
	// RawKeys are a delete's keys as Directus wrote them (numbers as
	// numbers), when known: Directus's own frames repeat them so.
	RawKeys json.RawMessage
}
