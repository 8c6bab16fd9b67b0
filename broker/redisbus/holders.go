package redisbus

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Holders is issue 24's cluster membership: which instances hold members of
// which groups (a group: one collection, access class and query, named by
// the broker's group key), and which of them reads for each.
//
// Keys (under the bus's prefix):
//
//	<prefix>holders:<hash of the group key>   sorted set: instance id → expiry (ms, Redis's clock)
//
// Every Refresh period an instance runs one script over the groups it
// holds: for each, it sets its own expiry to Redis's now + TTL, drops the
// members whose expiry passed, and reads the live ones. The expiry is
// Redis's clock, so instances on hosts whose clocks differ still agree on
// who is live. Close removes the instance from every set at once (a
// shutdown hands its groups over without waiting for the TTL); an instance
// that dies stops refreshing and is gone from every view within TTL +
// Refresh.
//
// The reader of a group is the live holder with the highest rendezvous
// weight hash(group key, instance id): every instance computes it from the
// same set with no message exchanged, a holder joining or leaving moves only
// the groups it wins or held, and each instance's share of the groups is
// even. Views are refreshed at different moments, so two instances may
// briefly disagree; the delivery protocol makes that safe (a result is
// delivered at most once per group and event, and a holder that gets none
// in time reads itself).
type Holders struct {
	rdb     redis.UniversalClient
	prefix  string
	id      string
	ttl     time.Duration
	refresh time.Duration

	mu   sync.Mutex
	view map[string]seen // group key → live holders at the last announce
	// fresh is when the last announce succeeded: a view older than the TTL
	// is not trusted (this instance may be cut from Redis).
	fresh time.Time
}

// seen is one group in the view: its live holders (sorted) and since
// when this instance has been announced as one of them.
type seen struct {
	live  []string
	since time.Time
}

// HoldersOptions configure a Holders.
type HoldersOptions struct {
	Prefix string
	// ID names this instance (random when empty).
	ID string
	// TTL is how long an announcement lives without a refresh; Refresh
	// how often it is renewed (TTL/3 when zero).
	TTL, Refresh time.Duration
}

// NewHolders makes the membership of one instance.
func NewHolders(rdb redis.UniversalClient, o HoldersOptions) *Holders {
	if o.ID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.ID = hex.EncodeToString(b[:])
	}
	if o.TTL <= 0 {
		o.TTL = 1500 * time.Millisecond
	}
	if o.Refresh <= 0 {
		o.Refresh = o.TTL / 3
	}
	return &Holders{rdb: rdb, prefix: o.Prefix, id: o.ID, ttl: o.TTL, refresh: o.Refresh, view: map[string]seen{}}
}

// ID is this instance's id.
func (h *Holders) ID() string { return h.id }

// Reader is the instance that reads for group in this instance's view
// (itself when it knows of no other holder, or its view is stale).
func (h *Holders) Reader(group string) string {
	h.mu.Lock()
	v, fresh := h.view[group], time.Since(h.fresh) < h.ttl
	h.mu.Unlock()
	if len(v.live) == 0 || !fresh {
		return h.id
	}
	return rendezvous(group, v.live)
}

// Settled reports whether this instance has been a holder of group for a
// refresh period: every live holder has then seen it in a view of its
// own, so the reader publishes for it.
func (h *Holders) Settled(group string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.view[group]
	return ok && time.Since(v.since) >= h.refresh && time.Since(h.fresh) < h.ttl
}

// Live is the holders of group in this instance's view.
func (h *Holders) Live(group string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.view[group].live...)
}

// rendezvous is the member of ids with the highest weight for group
// (highest random weight hashing); ties, which need a hash collision,
// go to the smaller id.
func rendezvous(group string, ids []string) string {
	best, bestW := "", uint64(0)
	for _, id := range ids {
		sum := sha256.Sum256([]byte(group + "\x00" + id))
		w := binary.BigEndian.Uint64(sum[:8])
		if best == "" || w > bestW || w == bestW && id < best {
			best, bestW = id, w
		}
	}
	return best
}

func (h *Holders) key(group string) string {
	sum := sha256.Sum256([]byte(group))
	return h.prefix + "holders:" + hex.EncodeToString(sum[:16])
}

// announceScript renews ARGV[1]'s expiry in every KEYS set, drops the
// expired members and returns each set's live members.
var announceScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  redis.call('PEXPIRE', key, tonumber(ARGV[2]) * 2)
  out[i] = redis.call('ZRANGE', key, 0, -1)
end
return out
`)

// Announce renews this instance's announcements of groups (the groups it
// holds members of now; the others lapse) and refreshes its view.
func (h *Holders) Announce(ctx context.Context, groups []string) error {
	if len(groups) == 0 {
		h.mu.Lock()
		h.view, h.fresh = map[string]seen{}, time.Now()
		h.mu.Unlock()
		return nil
	}
	keys := make([]string, len(groups))
	for i, g := range groups {
		keys[i] = h.key(g)
	}
	res, err := announceScript.Run(ctx, h.rdb, keys, h.id, h.ttl.Milliseconds()).Slice()
	if err != nil {
		return fmt.Errorf("cluster holders: %w", err)
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	view := make(map[string]seen, len(groups))
	for i, g := range groups {
		var live []string
		if ids, ok := res[i].([]any); ok {
			for _, id := range ids {
				if s, ok := id.(string); ok {
					live = append(live, s)
				}
			}
		}
		sort.Strings(live)
		since := now
		if old, ok := h.view[g]; ok {
			since = old.since
		}
		view[g] = seen{live: live, since: since}
	}
	h.view, h.fresh = view, now
	return nil
}

// Run announces groups() every Refresh until ctx ends. A failed announce
// is retried at the next tick; meanwhile the view ages (and is not trusted
// past the TTL).
func (h *Holders) Run(ctx context.Context, groups func() []string, failed func(error)) {
	t := time.NewTicker(h.refresh)
	defer t.Stop()
	for {
		if err := h.Announce(ctx, groups()); err != nil && ctx.Err() == nil && failed != nil {
			failed(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close withdraws this instance from every group of its view.
func (h *Holders) Close(ctx context.Context) error {
	h.mu.Lock()
	groups := make([]string, 0, len(h.view))
	for g := range h.view {
		groups = append(groups, g)
	}
	h.view = map[string]seen{}
	h.mu.Unlock()
	if len(groups) == 0 {
		return nil
	}
	pipe := h.rdb.Pipeline()
	for _, g := range groups {
		pipe.ZRem(ctx, h.key(g), h.id)
	}
	_, err := pipe.Exec(ctx)
	return err
}
