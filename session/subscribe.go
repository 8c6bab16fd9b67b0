package session

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// SubscribeRequest is a subscribe of either protocol.
type SubscribeRequest struct {
	// Key names the subscription within the connection (KeyForUID,
	// KeyForCollection or NewKey). A subscription with the same key is
	// removed first, even when this subscribe fails.
	Key        string
	Collection *string
	Query      json.RawMessage
	Actions    broker.ActionSet
	// UID is echoed in every frame of the subscription, as the encoder
	// writes it.
	UID json.RawMessage
	// Item restricts the subscription to one item (Directus's "item").
	Item string
	// Init sends the items the query selects (or the one item) first.
	Init bool
	// Since resumes after this event id: the kept events after it come
	// first.
	Since   string
	Encoder broker.Encoder
}

// entry is one subscription of the session.
type entry struct {
	sub  *broker.Subscription
	item string
	// query identifies the subscription's read (collection, query, item);
	// user is whose Usage it counts in ("" none).
	query string
	user  string
}

// removed detaches e, taken out of s.subs, and gives back its quota.
func (s *Session) removed(e entry) {
	s.deps.Broker.Unsubscribe(e.sub)
	s.deps.Usage.dropQuery(e.user, e.query)
}

// Subscribe attaches a subscription. Its ack (the encoder's) is sent only
// once it really exists; on error nothing was sent and the client should be
// told with the error, naming the subscription. Failures are counted, and
// logged when the broker, not the request, is at fault.
func (s *Session) Subscribe(ctx context.Context, req SubscribeRequest) (*broker.Subscription, error) {
	sub, err := s.subscribe(s.onBehalf(ctx), req)
	if err != nil && !errors.Is(err, ErrConnectionClosing) && !errors.Is(err, broker.ErrDetached) && s.ctx.Err() == nil {
		s.deps.Failures.add("subscribe", err)
		if e := AsError(err); e.Status >= 500 {
			coll := ""
			if req.Collection != nil {
				coll = *req.Collection
			}
			s.log.Warn().Err(err).Str("collection", coll).Str("code", e.Code).Bool("resume", req.Since != "").
				Msg("subscribe failed: the client was told (nothing was acknowledged)")
		}
	}
	return sub, err
}

func (s *Session) subscribe(ctx context.Context, req SubscribeRequest) (*broker.Subscription, error) {
	coll, err := Collection(req.Collection)
	if err != nil {
		return nil, err
	}
	q, err := Query(req.Query)
	if err != nil {
		return nil, err
	}
	if err := Since(req.Since); err != nil {
		return nil, err
	}
	qkey := q.Key()
	e := entry{item: req.Item, query: coll + "\x00" + req.Item + "\x00" + qkey}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrConnectionClosing
	}
	old, replacing := s.subs[req.Key]
	delete(s.subs, req.Key)
	cred := s.cred
	expired := s.expired
	e.user = s.slot.User
	limit := s.withinLimitsLocked(e.query)
	s.mu.Unlock()
	if replacing {
		s.removed(old)
	}
	if limit != nil {
		return nil, limit
	}
	if expired {
		return nil, ErrTokenExpired
	}
	if err := s.deps.Usage.addQuery(e.user, e.query); err != nil {
		return nil, err
	}
	sub, err := s.attach(ctx, req, cred, coll, q)
	if err != nil {
		s.deps.Usage.dropQuery(e.user, e.query)
		return nil, err
	}
	e.sub = sub
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.removed(e)
		return nil, ErrConnectionClosing
	}
	s.subs[req.Key] = e
	now := s.cred
	s.mu.Unlock()
	if now != cred {
		// The token changed while this subscribe ran (its expiry fell back
		// to the public role): follow it.
		s.rebind(ctx, req.Key, e, cred, now)
	}
	s.warnUncovered(sub)
	return sub, nil
}

// withinLimitsLocked tells whether one more subscription with query fits
// the connection's bounds.
func (s *Session) withinLimitsLocked(query string) error {
	lim := s.deps.Limits
	if len(s.subs) >= lim.MaxSubscriptions {
		return ErrTooManySubscriptions
	}
	distinct := map[string]struct{}{query: {}}
	bytes := len(query)
	for _, e := range s.subs {
		distinct[e.query] = struct{}{}
		bytes += len(e.query)
	}
	if q := lim.Quota.QueriesPerConnection; q > 0 && len(distinct) > q {
		return ErrTooManyQueries
	}
	if b := lim.Quota.QueryBytesPerConnection; b > 0 && bytes > b {
		return ErrQueriesTooLarge
	}
	return nil
}

// attach checks the access (or reads the snapshot, which checks it) and
// attaches the subscription to the broker.
func (s *Session) attach(ctx context.Context, req SubscribeRequest, cred broker.Credentials, coll string, q broker.Query) (*broker.Subscription, error) {
	s.prepare(ctx, cred)
	sub := broker.NewSubscription(coll, cred, q, req.Actions, req.UID, s, req.Encoder)
	opts := broker.AttachOptions{Since: req.Since}
	if req.Init {
		opts.Snapshot = func(ctx context.Context) (broker.Snapshot, error) { return s.snapshot(ctx, cred, coll, q, req.Item) }
	} else if err := s.check(ctx, cred, coll, q, req.Item); err != nil {
		// No snapshot: the token must be proven to read the collection
		// with this query now, so a forbidden collection or field fails
		// here.
		return nil, s.refused(cred, err)
	}
	if err := s.deps.Broker.Subscribe(ctx, sub, opts); err != nil {
		return nil, s.refused(cred, err)
	}
	return sub, nil
}

// warnUncovered tells the subscriber (once, after its ack) and the log (once
// per collection) when no active Flow sends the collection's events: it
// would otherwise wait for events that never come.
func (s *Session) warnUncovered(sub *broker.Subscription) {
	if s.deps.Coverage == nil {
		return
	}
	if covered, known := s.deps.Coverage.Covered(sub.Collection); !known || covered {
		return
	}
	s.Send(sub.Encoder.Notice(sub, broker.Notice{Code: "NOT_COVERED",
		Message: "no active Directus Flow sends this collection's events to the broker: run directus-ws-broker flow install (without --collections it follows every collection)"}))
	if _, seen := s.deps.warnedUncovered.LoadOrStore(sub.Collection, true); !seen {
		s.deps.Log.Warn().Str("collection", sub.Collection).Msg("subscription to a collection no active Flow covers: its subscribers get no events (flow install)")
	}
}

// refused passes err on; a refusal of the token itself expires it.
func (s *Session) refused(cred broker.Credentials, err error) error {
	if cred.Token != "" && tokenRefused(err) {
		s.TokenExpired(cred.Token)
		return ErrTokenExpired
	}
	return err
}

// readItem reads one item as Directus's readOne does: a 403 when the token
// may not read it.
func (s *Session) readItem(ctx context.Context, token, collection, item string, q broker.Query) (json.RawMessage, error) {
	params, err := directus.QueryValues(directus.ItemQuery(q))
	if err != nil {
		return nil, Invalid(err.Error())
	}
	raw, err := s.deps.REST.DoRaw(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"items", collection, item}, Query: params, Token: token, Kind: "snapshot"})
	if err != nil {
		return nil, err
	}
	return dataOf(raw)
}

// Unsubscribe removes the subscription with key; ok is false when there is
// none.
func (s *Session) Unsubscribe(key string) (sub *broker.Subscription, ok bool) {
	s.mu.Lock()
	e, ok := s.subs[key]
	delete(s.subs, key)
	s.mu.Unlock()
	if ok {
		s.removed(e)
	}
	return e.sub, ok
}

// UnsubscribeWhere removes every subscription for which match is true (all
// of them when match is nil) and returns them.
func (s *Session) UnsubscribeWhere(match func(*broker.Subscription) bool) []*broker.Subscription {
	var removed []*broker.Subscription
	var entries []entry
	s.mu.Lock()
	for k, e := range s.subs {
		if match == nil || match(e.sub) {
			removed = append(removed, e.sub)
			entries = append(entries, e)
			delete(s.subs, k)
		}
	}
	s.mu.Unlock()
	for _, e := range entries {
		s.removed(e)
	}
	return removed
}

// prepare loads what the classifier needs of cred's user (its role, once,
// batched with other subscribers'). On failure the classifier gives the user
// a class of its own: nothing is shared that was not proven alike.
func (s *Session) prepare(ctx context.Context, cred broker.Credentials) {
	if s.deps.Access == nil {
		return
	}
	id, _ := cred.Principal.(directus.Identity)
	_ = s.deps.Access.Prepare(ctx, id)
}
