package session

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// Shared is what the subscribers of one access class share across
// connections: subscribe checks (a positive answer is remembered for
// CheckTTL, and concurrent checks make one call) and snapshot reads
// (coalesced: a read is shared only by those who asked before it started).
// A reconnect storm thus costs Directus about one check per class,
// collection and query, not one per socket.
type Shared struct {
	CheckTTL time.Duration

	mu      sync.Mutex
	checked map[string]time.Time
	// checks may join a running check (a permission proof a moment old is
	// as good); snapshots only join one that has not started (data).
	checks    broker.Coalescer
	snapshots broker.Coalescer
}

// NewShared makes a Shared remembering passed checks for checkTTL.
func NewShared(checkTTL time.Duration) *Shared {
	return &Shared{CheckTTL: checkTTL, checks: broker.Coalescer{JoinRunning: true}}
}

// maxChecked bounds the remembered checks.
const maxChecked = 65536

// generation is the classifier's count of access changes, when it keeps one:
// a remembered check is not trusted across a change.
func generation(c broker.Classifier) uint64 {
	if g, ok := c.(interface{ Generation() uint64 }); ok {
		return g.Generation()
	}
	return 0
}

func (s *Session) shareKey(kind string, cred broker.Credentials, collection string, q broker.Query, item string) string {
	classes := s.deps.classes()
	b, _ := json.Marshal([]any{kind, classes.Class(cred, collection, q), generation(classes), collection, item, q.Key()})
	return string(b)
}

// check proves with Directus that cred may read collection with q (or the
// one item), sharing the proof with the subscribers of its class.
func (s *Session) check(ctx context.Context, cred broker.Credentials, collection string, q broker.Query, item string) error {
	sh := s.deps.Shared
	if sh == nil {
		return s.checkDirect(ctx, cred.Token, collection, q, item)
	}
	key := s.shareKey("check", cred, collection, q, item)
	sh.mu.Lock()
	at, ok := sh.checked[key]
	sh.mu.Unlock()
	if ok && time.Since(at) < sh.CheckTTL {
		return nil
	}
	_, shared, err := sh.checks.Do(ctx, key, func(ctx context.Context) (any, error) {
		return nil, s.checkDirect(ctx, cred.Token, collection, q, item)
	})
	if shared && tokenRefused(err) {
		// The token of the subscriber whose check this was is refused;
		// this one's may be fine.
		err = s.checkDirect(ctx, cred.Token, collection, q, item)
	}
	if err == nil && sh.CheckTTL > 0 {
		sh.mu.Lock()
		if len(sh.checked) >= maxChecked || sh.checked == nil {
			sh.checked = map[string]time.Time{}
		}
		sh.checked[key] = time.Now()
		sh.mu.Unlock()
	}
	return err
}

// checkDirect is a read of nothing, so a forbidden collection or field
// fails.
func (s *Session) checkDirect(ctx context.Context, token, collection string, q broker.Query, item string) error {
	if item != "" {
		_, err := s.readItem(ctx, token, collection, item, q)
		return err
	}
	probe := broker.Query{}
	for k, v := range q {
		probe[k] = v
	}
	probe["limit"] = 0
	_, err := s.deps.Reader.ReadSnapshot(ctx, token, collection, probe)
	return err
}

// snapshot reads what a subscription starts from, sharing the read with the
// subscribers of its class who ask before it starts, with its items' keys
// (for dropping the duplicate creates that may follow it).
func (s *Session) snapshot(ctx context.Context, cred broker.Credentials, collection string, q broker.Query, item string) (broker.Snapshot, error) {
	data, err := s.snapshotData(ctx, cred, collection, q, item)
	if err != nil {
		return broker.Snapshot{}, err
	}
	snap := broker.Snapshot{Data: data}
	switch {
	case item != "":
		snap.Keys = []string{item}
	default:
		snap.Keys = s.deps.Reader.KeysOf(ctx, cred.Token, collection, data)
	}
	return snap, nil
}

func (s *Session) snapshotData(ctx context.Context, cred broker.Credentials, collection string, q broker.Query, item string) (json.RawMessage, error) {
	read := func(ctx context.Context) (json.RawMessage, error) {
		if item != "" {
			return s.readItem(ctx, cred.Token, collection, item, q)
		}
		return s.deps.Reader.ReadSnapshot(ctx, cred.Token, collection, q)
	}
	sh := s.deps.Shared
	if sh == nil {
		return read(ctx)
	}
	v, shared, err := sh.snapshots.Do(ctx, s.shareKey("snapshot", cred, collection, q, item), func(ctx context.Context) (any, error) {
		return read(ctx)
	})
	if shared && tokenRefused(err) {
		return read(ctx)
	}
	data, _ := v.(json.RawMessage)
	return data, err
}

// tokenRefused reports whether err is Directus refusing the token itself.
func tokenRefused(err error) bool {
	var de *directus.Error
	return errors.Is(err, broker.ErrTokenExpired) || (errors.As(err, &de) && de.Status == http.StatusUnauthorized)
}
