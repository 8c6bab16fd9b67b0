// Package session owns one client connection's state — its token and whose
// it is, its subscriptions, its token's expiry — and the operations both
// WebSocket protocols carry: auth, subscribe, unsubscribe and items.
//
// The protocol codecs (package protocol's subpackages) only parse frames
// into these operations and encode the results. Validation, limits, the
// replace rule and the ordering rule are here, once:
//
//   - Ordering: a codec calls Authenticate, Subscribe and Unsubscribe one at
//     a time, in the order the frames arrived, and starts Items in that
//     order too (Items captures the token when it starts, then may run
//     alongside later frames). So every frame sees the state the frames
//     before it left.
//   - Replace: a subscribe with the key of an existing subscription removes
//     that one first, even when the new one fails (as Directus does).
//   - Limits: at most Limits.MaxSubscriptions per connection; an answer
//     larger than Limits.MaxResponseBytes is refused.
package session

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// Conn is the transport of one connection.
type Conn interface {
	// Send queues frame behind the frames sent before; it never blocks.
	Send(frame []byte)
	// Close closes the connection with code once the frames queued before
	// have been written.
	Close(code int, reason string)
}

// Protocol is what differs between the protocols when a token expires.
type Protocol interface {
	// TokenExpired is the frame telling the client its token no longer
	// works and it has AuthGrace to send a new one.
	TokenExpired() []byte
	// AuthGrace is how long an expired client may take to authenticate.
	AuthGrace() time.Duration
	// GraceOver runs when it did not: the protocol continues as the public
	// role (s.Authenticate with no token) or closes the connection.
	GraceOver(s *Session)
	// Dropped is the frame telling the client that sub ended without its
	// asking: its new token may not read what it subscribed to.
	Dropped(sub *broker.Subscription, err error) []byte
}

// Reader reads items with a client's token (the broker's Reader), and tells
// the keys of the items of a snapshot (nil when it cannot).
type Reader interface {
	broker.Reader
	KeysOf(ctx context.Context, token, collection string, data json.RawMessage) []string
}

// Authenticator validates tokens with Directus.
type Authenticator interface {
	Validate(ctx context.Context, token string) (directus.Identity, error)
}

// REST performs Directus REST calls (with the client's token).
type REST interface {
	DoRaw(ctx context.Context, r directus.Request) ([]byte, error)
}

// Limits bound what one connection may hold.
type Limits struct {
	MaxSubscriptions int
	// MaxResponseBytes bounds an items answer (it must fit the send queue).
	MaxResponseBytes int
	// Quota bounds the distinct queries and connections; Deps.Usage counts
	// them across connections.
	Quota Quota
}

// Deps are the collaborators every session shares, built once by the
// broker's assembly (internal/app).
type Deps struct {
	Broker *broker.Broker
	Reader Reader
	Auth   Authenticator
	REST   REST
	// Classes is the broker's Classifier: a token change that changes a
	// subscription's class re-checks its access (TokenClasses if nil).
	Classes broker.Classifier
	// Shared shares checks and snapshots within classes (nil: none).
	Shared *Shared
	// Access loads what Classes needs of a token's user before its first
	// subscribe (nil: nothing to load).
	Access Preparer
	// Coverage tells whether a Directus Flow sends a collection's events
	// (nil: unknown).
	Coverage Coverage
	Limits   Limits
	// Usage counts what each user holds across connections (nil: no
	// per-user bounds).
	Usage *Usage
	// Failures counts the operations that failed, by operation and code.
	Failures *Failures
	Log      zerolog.Logger

	// warnedUncovered remembers the collections logged as not covered.
	warnedUncovered sync.Map
}

// Coverage tells whether a collection's events reach the broker; known is
// false when it cannot tell.
type Coverage interface {
	Covered(collection string) (covered, known bool)
}

// Preparer loads what the classifier needs of an identity (its user's role).
type Preparer interface {
	Prepare(ctx context.Context, id directus.Identity) error
}

func (d *Deps) classes() broker.Classifier {
	if d.Classes == nil {
		return broker.TokenClasses{}
	}
	return d.Classes
}

// Session is one connection's state. It is the broker.Sink of its
// subscriptions.
type Session struct {
	deps  *Deps
	proto Protocol
	conn  Conn
	log   zerolog.Logger
	ctx   context.Context
	stop  context.CancelFunc

	mu   sync.Mutex
	cred broker.Credentials
	// gen counts token changes: an expiry timer armed for an older token
	// does nothing.
	gen     uint64
	subs    map[string]entry
	expiry  *time.Timer
	grace   *time.Timer
	expired bool
	closed  bool
	anon    uint64
	// slot is the connection slot of Deps.Usage the session holds; addr
	// its client's address.
	slot Slot
	addr string
}

// Peer is who opened a connection: its token ("" = the public role), the
// token's identity (zero for none) and the client's address.
type Peer struct {
	Token string
	ID    directus.Identity
	Addr  string
}

// New makes the session of a connection opened by p. It fails with
// ErrTooManyConnections when p's user, or p's address without a user,
// holds all its connections; Close gives the slot back.
func New(deps *Deps, proto Protocol, conn Conn, p Peer, log zerolog.Logger) (*Session, error) {
	sl := SlotOf(p.ID.UserID, p.Addr)
	if err := deps.Usage.Connect(sl); err != nil {
		deps.Failures.add("connect", err)
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{deps: deps, proto: proto, conn: conn, log: log, ctx: ctx, stop: cancel,
		cred: credentials(p.Token, p.ID, p.Addr), subs: map[string]entry{}, slot: sl, addr: p.Addr}
	s.watchExpiry(s.gen, p.ID.Expires)
	return s, nil
}

func credentials(token string, id directus.Identity, addr string) broker.Credentials {
	return broker.Credentials{Token: token, Principal: id, Addr: addr}
}

// onBehalf marks ctx as a request the client caused, made from its address
// (Directus sees the client: its limits and ip_access apply to it).
func (s *Session) onBehalf(ctx context.Context) context.Context {
	return directus.ClientCaused(broker.WithClientAddr(ctx, s.addr))
}

// Context ends when the session closes.
func (s *Session) Context() context.Context { return s.ctx }

// Token is the connection's Directus token ("" for the public role).
func (s *Session) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cred.Token
}

// Send implements broker.Sink; empty frames (an item subscription's
// encoder makes them for other items) are dropped.
func (s *Session) Send(frame []byte) {
	if len(frame) > 0 {
		s.conn.Send(frame)
	}
}

// TokenExpired implements broker.Sink: Directus refused token during a read.
// A refusal of a token the connection has since replaced is old news.
func (s *Session) TokenExpired(token string) {
	s.mu.Lock()
	gen, current := s.gen, s.cred.Token == token
	s.mu.Unlock()
	if current {
		s.expire(gen)
	}
}

// Close detaches everything; called once when the connection ends.
func (s *Session) Close() {
	s.stop()
	s.mu.Lock()
	subs := s.subs
	s.subs = map[string]entry{}
	wasClosed := s.closed
	s.closed = true
	s.stopTimersLocked()
	sl := s.slot
	s.mu.Unlock()
	if !wasClosed {
		s.deps.Usage.Disconnect(sl)
	}
	for _, e := range subs {
		s.removed(e)
	}
}

func (s *Session) stopTimersLocked() {
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiry = nil
	}
	if s.grace != nil {
		s.grace.Stop()
		s.grace = nil
	}
}

// Subscriptions returns the session's subscriptions (for tests and metrics).
func (s *Session) Subscriptions() []*broker.Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*broker.Subscription, 0, len(s.subs))
	for _, e := range s.subs {
		out = append(out, e.sub)
	}
	return out
}

// KeyForUID is the key of a subscription with a client uid: its string
// form for strings and numbers (Directus: String(uid)), else its JSON.
func KeyForUID(uid json.RawMessage) string {
	if s, ok := UIDString(uid); ok {
		return "u:" + s
	}
	return "u:" + string(uid)
}

// KeyForCollection is the key of the one subscription per collection that
// a subscribe without uid makes in the extension protocol.
func KeyForCollection(collection string) string { return "c:" + collection }

// NewKey is a fresh key, for a subscription without uid that never
// replaces another (Directus's protocol).
func (s *Session) NewKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.anon++
	return "n:" + strconv.FormatUint(s.anon, 10)
}
