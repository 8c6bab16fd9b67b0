package session

import (
	"net/http"
	"sync"
)

// Every distinct query of a token is a read group of its own: one Directus
// read per event, whoever else subscribes. A client that makes hundreds of
// queries differing by one id thus multiplies the reads everyone waits for,
// and every stored query costs memory. These bounds keep one user's cost to
// what an application needs.

// Quota bounds what one connection, and one user across its connections,
// may hold. Zero fields mean no bound.
type Quota struct {
	// QueriesPerConnection bounds the distinct (collection, query, item)
	// of one connection; more subscriptions with the same query are
	// bounded by Limits.MaxSubscriptions only.
	QueriesPerConnection int
	// QueriesPerUser bounds the distinct queries of one user over all its
	// connections (the public role has no user: per connection only).
	QueriesPerUser int
	// QueryBytesPerConnection bounds the size of the queries one
	// connection keeps.
	QueryBytesPerConnection int
	// ConnectionsPerUser bounds the connections authenticated as one user.
	ConnectionsPerUser int
	// AnonymousPerAddress bounds the connections without a user (not
	// authenticated yet, or the public role) from one source address.
	AnonymousPerAddress int
}

// The refusals of the quota.
var (
	ErrTooManyQueries = &Error{Status: http.StatusTooManyRequests, Code: "LIMIT_EXCEEDED",
		Message: "too many distinct queries (max_queries_per_connection / max_queries_per_user): subscriptions with the same collection and query share one; unsubscribe from some first"}
	ErrQueriesTooLarge = &Error{Status: http.StatusTooManyRequests, Code: "LIMIT_EXCEEDED",
		Message: "the queries of this connection exceed max_query_bytes: use fewer or smaller queries"}
	ErrTooManyConnections = &Error{Status: http.StatusTooManyRequests, Code: "TOO_MANY_CONNECTIONS",
		Message: "this user has too many connections open (max_connections_per_user)"}
	ErrTooManyAnonymous = &Error{Status: http.StatusTooManyRequests, Code: "TOO_MANY_CONNECTIONS",
		Message: "too many connections without a user from this address (max_anonymous_per_address): authenticate, or close some"}
)

// Usage counts what users (and addresses without a user) hold across
// connections; safe for concurrent use. A nil *Usage bounds nothing.
type Usage struct {
	quota Quota
	mu    sync.Mutex
	conns map[Slot]int
	// queries: user -> query key -> subscriptions holding it.
	queries map[string]map[string]int
}

// Slot is what a connection counts against: its user, or without a user
// (not authenticated yet, or the public role) its source address.
type Slot struct{ User, Addr string }

// SlotOf is the slot of a connection of user from addr.
func SlotOf(user, addr string) Slot {
	if user != "" {
		return Slot{User: user}
	}
	return Slot{Addr: addr}
}

// NewUsage tracks usage against q.
func NewUsage(q Quota) *Usage {
	return &Usage{quota: q, conns: map[Slot]int{}, queries: map[string]map[string]int{}}
}

// Connect takes a connection of slot: ErrTooManyConnections past
// ConnectionsPerUser for a user, ErrTooManyAnonymous past
// AnonymousPerAddress for an address.
func (u *Usage) Connect(sl Slot) error {
	if u == nil || sl == (Slot{}) {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	n := u.conns[sl]
	if sl.User != "" && u.quota.ConnectionsPerUser > 0 && n >= u.quota.ConnectionsPerUser {
		return ErrTooManyConnections
	}
	if sl.User == "" && u.quota.AnonymousPerAddress > 0 && n >= u.quota.AnonymousPerAddress {
		return ErrTooManyAnonymous
	}
	u.conns[sl] = n + 1
	return nil
}

// Disconnect gives back a connection Connect took.
func (u *Usage) Disconnect(sl Slot) {
	if u == nil || sl == (Slot{}) {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conns[sl]--; u.conns[sl] <= 0 {
		delete(u.conns, sl)
	}
}

// addQuery counts one more subscription of user holding query key.
func (u *Usage) addQuery(user, key string) error {
	if u == nil || user == "" {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	qs := u.queries[user]
	if qs[key] == 0 && u.quota.QueriesPerUser > 0 && len(qs) >= u.quota.QueriesPerUser {
		return ErrTooManyQueries
	}
	if qs == nil {
		qs = map[string]int{}
		u.queries[user] = qs
	}
	qs[key]++
	return nil
}

// dropQuery gives back what addQuery took.
func (u *Usage) dropQuery(user, key string) {
	if u == nil || user == "" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	qs := u.queries[user]
	if qs == nil {
		return
	}
	if qs[key]--; qs[key] <= 0 {
		delete(qs, key)
	}
	if len(qs) == 0 {
		delete(u.queries, user)
	}
}

// Held is how many connection slots and users with queries are counted
// (for tests: nothing stays counted for what holds nothing).
func (u *Usage) Held() (slots, users int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns), len(u.queries)
}
