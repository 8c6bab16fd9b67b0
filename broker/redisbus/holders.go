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
//	<prefix>alive:<instance id>               "1", expiring after TTL: the instance is live
//	<prefix>holders:<hash of the group key>   set of the ids of the instances holding the group
//
// Every Refresh an instance renews its alive key, adds itself to the sets
// of the groups it began holding and leaves those it stopped holding, and
// reads the alive keys of the instances it knows of: one pipelined round
// trip whose cost does not grow with the number of groups. Every Membership
// period (and for a group it just joined) it also reads the groups' sets.
// The expiry is Redis's, so instances on hosts whose clocks differ still
// agree on who is live. Close deletes the alive key and leaves every set
// (a shutdown hands its groups over at the others' next refresh); an
// instance that dies is out of every view once its alive key expired
// (TTL + Refresh), and its id is removed from the sets by the others.
//
// The reader of a group is the live holder with the highest rendezvous
// weight hash(group key, instance id): every instance computes it from the
// same set with no message exchanged, a holder joining or leaving moves only
// the groups it wins or held, and each instance's share of the groups is
// even. Views are refreshed at different moments, so two instances may
// briefly disagree; the delivery protocol makes that safe (a result is
// delivered at most once per group and event, a holder that gets none in
// time reads itself, and a holder new to a group reads for itself until
// every other holder has read its set since: Settled).
//
// The instance announces what Run's groups function returns (the broker's
// groups at that moment): nothing to keep in step with subscribes.
type Holders struct {
	rdb        redis.UniversalClient
	prefix     string
	id         string
	ttl        time.Duration
	refresh    time.Duration
	membership time.Duration

	mu   sync.Mutex
	view map[string]seen // group → live holders at the last refresh
	// fresh is when the last refresh succeeded: a view older than the TTL
	// is not trusted (this instance may be cut from Redis).
	fresh time.Time
	// joined are the groups whose sets hold this instance; members their
	// sets as last read, at lastMembers.
	joined      map[string]bool
	members     map[string][]string
	lastMembers time.Time
}

// seen is one group in the view: its live holders (sorted) and since
// when this instance has been one of them.
type seen struct {
	live  []string
	since time.Time
}

// HoldersOptions configure a Holders.
type HoldersOptions struct {
	Prefix string
	// ID names this instance (random when empty).
	ID string
	// TTL is how long the instance counts as live without a refresh;
	// Refresh how often it renews that (TTL/4 when zero); Membership how
	// often it rereads the groups' sets (4 × Refresh when zero).
	TTL, Refresh, Membership time.Duration
}

// setExpiry bounds how long a set outlives its last refresh (a group whose
// every holder died).
const setExpiry = time.Hour

// NewHolders makes the membership of one instance.
func NewHolders(rdb redis.UniversalClient, o HoldersOptions) *Holders {
	if o.ID == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		o.ID = hex.EncodeToString(b[:])
	}
	if o.TTL <= 0 {
		o.TTL = time.Second
	}
	if o.Refresh <= 0 {
		o.Refresh = o.TTL / 4
	}
	if o.Membership <= 0 {
		o.Membership = 4 * o.Refresh
	}
	return &Holders{rdb: rdb, prefix: o.Prefix, id: o.ID, ttl: o.TTL, refresh: o.Refresh, membership: o.Membership,
		view: map[string]seen{}, joined: map[string]bool{}, members: map[string][]string{}}
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

// Settled reports whether this instance has held group long enough for
// every other holder to have read the group's set since (a membership
// period and a refresh): the reader then publishes for it.
func (h *Holders) Settled(group string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.view[group]
	return ok && time.Since(v.since) >= h.membership+h.refresh && time.Since(h.fresh) < h.ttl
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

func (h *Holders) aliveKey(id string) string { return h.prefix + "alive:" + id }

// Announce renews this instance's liveness and its memberships of groups
// (the groups it holds members of now; it leaves the others), and
// refreshes its view.
func (h *Holders) Announce(ctx context.Context, groups []string) error {
	want := make(map[string]bool, len(groups))
	for _, g := range groups {
		want[g] = true
	}
	h.mu.Lock()
	var added, removed []string
	for g := range want {
		if !h.joined[g] {
			added = append(added, g)
		}
	}
	for g := range h.joined {
		if !want[g] {
			removed = append(removed, g)
		}
	}
	full := time.Since(h.lastMembers) >= h.membership
	h.mu.Unlock()
	read := added // the sets to read now
	if full {
		read = groups
	}
	pipe := h.rdb.Pipeline()
	pipe.Set(ctx, h.aliveKey(h.id), "1", h.ttl)
	for _, g := range added {
		pipe.SAdd(ctx, h.key(g), h.id)
		pipe.PExpire(ctx, h.key(g), setExpiry)
	}
	for _, g := range removed {
		pipe.SRem(ctx, h.key(g), h.id)
	}
	sets := make([]*redis.StringSliceCmd, len(read))
	for i, g := range read {
		sets[i] = pipe.SMembers(ctx, h.key(g))
		if full {
			pipe.PExpire(ctx, h.key(g), setExpiry)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("cluster holders: %w", err)
	}
	now := time.Now()
	h.mu.Lock()
	for _, g := range added {
		h.joined[g] = true
	}
	for _, g := range removed {
		delete(h.joined, g)
		delete(h.members, g)
	}
	for i, g := range read {
		h.members[g] = sets[i].Val()
	}
	if full {
		h.lastMembers = now
	}
	ids := map[string]bool{}
	for g := range want {
		for _, id := range h.members[g] {
			if id != h.id {
				ids[id] = true
			}
		}
	}
	h.mu.Unlock()
	alive, err := h.alive(ctx, ids)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	view := make(map[string]seen, len(want))
	dead := map[string][]string{} // group → ids of dead instances in its set
	for g := range want {
		live := []string{h.id}
		for _, id := range h.members[g] {
			switch {
			case id == h.id:
			case alive[id]:
				live = append(live, id)
			default:
				dead[g] = append(dead[g], id)
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
	if len(dead) > 0 {
		// Tidy the sets of instances that died without leaving them.
		go h.forget(dead)
	}
	return nil
}

// alive reads which of ids have a live alive key.
func (h *Holders) alive(ctx context.Context, ids map[string]bool) (map[string]bool, error) {
	out := map[string]bool{}
	if len(ids) == 0 {
		return out, nil
	}
	list := make([]string, 0, len(ids))
	keys := make([]string, 0, len(ids))
	for id := range ids {
		list = append(list, id)
		keys = append(keys, h.aliveKey(id))
	}
	vals, err := h.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("cluster holders: %w", err)
	}
	for i, v := range vals {
		if v != nil {
			out[list[i]] = true
		}
	}
	return out, nil
}

// forget removes dead instances' ids from the sets they were seen in.
func (h *Holders) forget(dead map[string][]string) {
	ctx, cancel := context.WithTimeout(context.Background(), h.ttl)
	defer cancel()
	pipe := h.rdb.Pipeline()
	for g, ids := range dead {
		args := make([]any, len(ids))
		for i, id := range ids {
			args[i] = id
		}
		pipe.SRem(ctx, h.key(g), args...)
	}
	_, _ = pipe.Exec(ctx)
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

// Close withdraws this instance: its alive key and every set it joined.
func (h *Holders) Close(ctx context.Context) error {
	h.mu.Lock()
	groups := make([]string, 0, len(h.joined))
	for g := range h.joined {
		groups = append(groups, g)
	}
	h.view, h.joined, h.members = map[string]seen{}, map[string]bool{}, map[string][]string{}
	h.mu.Unlock()
	pipe := h.rdb.Pipeline()
	pipe.Del(ctx, h.aliveKey(h.id))
	for _, g := range groups {
		pipe.SRem(ctx, h.key(g), h.id)
	}
	_, err := pipe.Exec(ctx)
	return err
}
