package redisbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Cluster is broker.Cluster over Redis (issue 24): Holders says who reads
// for a group, and the reader's results travel on the group's own channel
//
//	channel <prefix>results:<hash of the group key>
//
// to which only the instances holding members of that group subscribe. A
// message is {"b":1} (the reader is reading: a heartbeat) or {"r":[...]}
// (its results, one per event). Results that arrive before the group's
// pipeline asks for them are kept (bounded) until it does.
type Cluster struct {
	holders *Holders
	rdb     redis.UniversalClient
	prefix  string
	timeout time.Duration
	log     zerolog.Logger

	mu     sync.Mutex
	groups map[string]*clusterGroup // hash → state
	ps     *redis.PubSub
	subbed map[string]bool // channels subscribed
}

type clusterGroup struct {
	results map[string]kept // event id → result
	beat    time.Time       // last heartbeat
	wake    chan struct{}   // closed (and replaced) on every message
	// suspect is the reader a wait for timed out on: until a message
	// comes from the group's channel again (or another reader is named),
	// this instance reads for itself instead of waiting once per batch.
	suspect string
}

type kept struct {
	r  broker.Result
	at time.Time
}

// Bounds on what is kept per group before it is asked for.
const (
	maxKeptResults = 4096
	keptFor        = 30 * time.Second
)

var _ broker.Cluster = (*Cluster)(nil)

// ClusterOptions configure a Cluster.
type ClusterOptions struct {
	Holders HoldersOptions
	// Timeout is how long a holder waits for the reader's results (after
	// its last heartbeat) before it reads itself.
	Timeout time.Duration
	// Log is the root logger (nil: the bus's; its component field would
	// then be there twice).
	Log *zerolog.Logger
}

// NewCluster makes the cluster reads of one instance on the bus's Redis.
func (b *Bus) NewCluster(o ClusterOptions) *Cluster {
	o.Holders.Prefix = b.opts.Prefix
	if o.Timeout <= 0 {
		o.Timeout = 500 * time.Millisecond
	}
	if o.Holders.TTL <= 0 {
		// A dead reader is out of the views within TTL + refresh.
		o.Holders.TTL, o.Holders.Refresh = time.Second, 250*time.Millisecond
	}
	log := b.log
	if o.Log != nil {
		log = o.Log.With().Str("component", "cluster").Logger()
	}
	return &Cluster{holders: NewHolders(b.client, o.Holders), rdb: b.client, prefix: b.opts.Prefix, timeout: o.Timeout,
		log: log, groups: map[string]*clusterGroup{}, subbed: map[string]bool{}}
}

// ID is this instance's id in the cluster.
func (c *Cluster) ID() string { return c.holders.ID() }

func groupHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

func (c *Cluster) channel(hash string) string { return c.prefix + "results:" + hash }

// Run subscribes to the channels of the groups keys() names and announces
// them, every refresh, until ctx ends; then it withdraws.
func (c *Cluster) Run(ctx context.Context, keys func() []string) {
	c.mu.Lock()
	c.ps = c.rdb.Subscribe(ctx)
	ps := c.ps
	c.mu.Unlock()
	go c.receive(ps)
	hashes := func() []string {
		ks := keys()
		out := make([]string, 0, len(ks))
		want := map[string]bool{}
		for _, k := range ks {
			h := groupHash(k)
			if !want[h] {
				want[h] = true
				out = append(out, h)
			}
		}
		c.follow(ctx, ps, want)
		return out
	}
	c.holders.Run(ctx, hashes, func(err error) { c.log.Warn().Err(err).Msg("cluster announce failed; reading locally until it works") })
	wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.holders.Close(wctx)
	_ = ps.Close()
}

// follow subscribes to the channels of want (before they are announced:
// a result is never published to a holder not yet listening) and
// unsubscribes from the others.
func (c *Cluster) follow(ctx context.Context, ps *redis.PubSub, want map[string]bool) {
	var add, drop []string
	c.mu.Lock()
	for h := range want {
		if !c.subbed[h] {
			c.subbed[h] = true
			add = append(add, c.channel(h))
		}
	}
	for h := range c.subbed {
		if !want[h] {
			delete(c.subbed, h)
			delete(c.groups, h)
			drop = append(drop, c.channel(h))
		}
	}
	c.mu.Unlock()
	if len(add) > 0 {
		if err := ps.Subscribe(ctx, add...); err != nil {
			c.log.Warn().Err(err).Msg("cluster: subscribing to results failed")
		}
	}
	if len(drop) > 0 {
		_ = ps.Unsubscribe(ctx, drop...)
	}
}

type clusterMessage struct {
	Beat    int             `json:"b,omitempty"`
	Results []broker.Result `json:"r,omitempty"`
}

func (c *Cluster) receive(ps *redis.PubSub) {
	for msg := range ps.Channel() {
		hash := msg.Channel[len(c.prefix)+len("results:"):]
		var m clusterMessage
		if json.Unmarshal([]byte(msg.Payload), &m) != nil {
			continue // not a result: as if it never came (the holder reads itself)
		}
		now := time.Now()
		c.mu.Lock()
		g := c.group(hash)
		g.beat, g.suspect = now, ""
		for _, r := range m.Results {
			if len(g.results) >= maxKeptResults {
				g.prune(now)
			}
			if len(g.results) < maxKeptResults {
				g.results[r.EventID] = kept{r: r, at: now}
			}
		}
		close(g.wake)
		g.wake = make(chan struct{})
		c.mu.Unlock()
	}
}

// group is hash's state (under c.mu).
func (c *Cluster) group(hash string) *clusterGroup {
	g := c.groups[hash]
	if g == nil {
		g = &clusterGroup{results: map[string]kept{}, wake: make(chan struct{})}
		c.groups[hash] = g
	}
	return g
}

func (g *clusterGroup) prune(now time.Time) {
	for id, k := range g.results {
		if now.Sub(k.at) > keptFor {
			delete(g.results, id)
		}
	}
}

// Reads implements broker.Cluster.
func (c *Cluster) Reads(key string) bool {
	h := groupHash(key)
	reader := c.holders.Reader(h)
	if reader == c.holders.ID() || !c.holders.Settled(h) {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[h]
	return g != nil && g.suspect == reader
}

// Publishes implements broker.Cluster.
func (c *Cluster) Publishes(key string) bool {
	h := groupHash(key)
	return c.holders.Reader(h) == c.holders.ID() && len(c.holders.Live(h)) > 1
}

// Reading implements broker.Cluster.
func (c *Cluster) Reading(key string) {
	c.publish(groupHash(key), clusterMessage{Beat: 1})
}

// Publish implements broker.Cluster.
func (c *Cluster) Publish(key string, results []broker.Result) {
	c.publish(groupHash(key), clusterMessage{Results: results})
}

func (c *Cluster) publish(hash string, m clusterMessage) {
	raw, err := json.Marshal(m)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := c.rdb.Publish(ctx, c.channel(hash), raw).Err(); err != nil {
		c.log.Debug().Err(err).Msg("cluster: publishing a result failed (the others read themselves)")
	}
}

// Await implements broker.Cluster: it waits until every id has a result,
// while the reader's heartbeats come at least every timeout.
func (c *Cluster) Await(ctx context.Context, key string, ids []string) (map[string]broker.Result, bool) {
	h := groupHash(key)
	start := time.Now()
	out := make(map[string]broker.Result, len(ids))
	for {
		c.mu.Lock()
		g := c.group(h)
		for _, id := range ids {
			if k, ok := g.results[id]; ok {
				if k.r.Failed {
					c.mu.Unlock()
					return nil, false
				}
				out[id] = k.r
				delete(g.results, id)
			}
		}
		last := start
		if g.beat.After(last) {
			last = g.beat
		}
		wake := g.wake
		c.mu.Unlock()
		if len(out) == len(ids) {
			return out, true
		}
		wait := time.Until(last.Add(c.timeout))
		if wait <= 0 {
			c.mu.Lock()
			g.suspect = c.holders.Reader(h)
			c.mu.Unlock()
			return nil, false
		}
		t := time.NewTimer(wait)
		select {
		case <-wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, false
		}
		t.Stop()
	}
}
