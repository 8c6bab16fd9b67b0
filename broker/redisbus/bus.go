package redisbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Bus carries events between broker instances through Redis, so a
// webhook received by any instance reaches the subscribers of all of them.
//
// Keys (all under Options.Prefix, default "directus-ws-broker:"):
//
//	<prefix>events              stream of every event, in publish order: what an instance
//	                            reads to catch up after its subscription broke (approximately
//	                            LiveSize entries kept)
//	<prefix>history:<coll>      stream of one collection's events, for resumes: exactly
//	                            HistorySize entries kept; older than HistoryMaxAge are
//	                            dropped when History reads them
//	<prefix>dropped             hash: collection → ID of its newest event no longer kept
//	<prefix>generation          hash {id, start}: which incarnation of the Redis data this is
//	channel <prefix>events      pub/sub: every event once per subscribed instance
//
// Publish runs one Lua script that, for each event, XADDs it to the events
// stream (whose auto ID becomes the event ID), XADDs it with the same ID to its
// collection's history stream and PUBLISHes it. Each instance holds one pub/sub
// subscription and hands what arrives to the broker, so Redis carries each
// event once per instance, never once per subscriber.
//
// Guarantees:
//   - All or none: the script runs atomically. Redis refuses a script that
//     would exceed maxmemory before its first write; the only way to get a
//     partial write is a history stream whose last ID is above the events
//     stream's (someone deleted or rewrote the keys), which the script
//     reports as an error.
//   - Across a Redis restart: when Publish returns nil (the webhook answers
//     202), Redis has already written the events to the socket of every
//     instance whose subscription was established: it fills subscribers'
//     output buffers while executing PUBLISH, and flushes them in the same
//     event-loop pass as the reply to Publish. What reached an instance's
//     socket is read even if Redis dies right after, so a restart, graceful
//     or not, does not take acknowledged events from connected instances.
//     The exceptions: Redis killed within that one write pass, and an
//     instance so far behind that its socket buffer was full (it is then
//     over Redis's pub/sub output limit and disconnected anyway).
//   - An instance whose subscription broke catches up from the events stream
//     after it resubscribes, skipping what it already handed on (IDs only
//     grow), so it misses nothing Redis still holds. What Redis lost
//     meanwhile (a restart without persistence while this instance was
//     disconnected, or more than LiveSize events) is lost for that
//     instance's subscribers, and logged; Bus has no way to tell the
//     subscribers yet. Clients resuming later with an ID from before a
//     restart are told of a gap (below).
//   - Publish returning an error (always wrapping broker.ErrBusUnavailable) means
//     the events were not acknowledged; when the connection broke after the
//     script ran they may still have been delivered (the webhook's sender
//     retries: at least once). Commands are never retried by the client, so
//     an acknowledged publish is never duplicated.
//   - History detects gaps exactly: events dropped by count or age (the
//     scripts record each collection's newest dropped ID), and an ID from
//     before the data generation started (Redis restarted without
//     persistence, or was flushed). An ID from an earlier generation that is
//     not older than the new generation's start (the server clock went
//     backwards) is not detected. The generation key must not be evicted:
//     run Redis with maxmemory-policy noeviction.
//
// Needs Redis 6.2 or newer (XTRIM MINID, exclusive XRANGE bounds).
//
// Redis Cluster: the script touches several keys, so all must hash to one
// slot; put a hash tag in the prefix ("{dwb}:").
type Bus struct {
	opts    Options
	client  *redis.Client
	log     zerolog.Logger
	now     func() time.Time
	keyGen  string
	keyLive string
	// keyDropped is a hash: collection → ID of its newest event no longer kept.
	keyDropped string
	channel    string

	horizon   atomic.Pointer[string] // see Horizon; set at the first subscription
	live      atomic.Bool            // the subscription is established and caught up
	firstLive chan struct{}          // closed when live is first true

	mu      sync.Mutex
	started bool
	closed  bool
	pubsub  *redis.PubSub // the current subscription, closed by Close
	cancel  context.CancelFunc
	done    chan struct{}
}

// Options configure a Bus; zero values take the defaults.
type Options struct {
	// URL is a redis:// or rediss:// URL (go-redis's ParseURL options apply).
	URL string
	// Prefix starts every key and the channel. Default "directus-ws-broker:".
	Prefix string
	// HistorySize is how many events are kept per collection for resumes.
	HistorySize int
	// HistoryMaxAge drops kept events older than this.
	HistoryMaxAge time.Duration
	// LiveSize is about how many events (of all collections) the events
	// stream keeps for instances catching up after their subscription broke.
	// Default 10000.
	LiveSize int
	// StartWait bounds how long Start waits for the first subscription.
	// Default 5s.
	StartWait time.Duration
	// PingInterval is how long a quiet subscription waits before it pings
	// Redis; no answer within another interval counts as a broken
	// connection. Default 10s.
	PingInterval time.Duration
}

func (o Options) withDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = "directus-ws-broker:"
	}
	if o.HistorySize <= 0 {
		o.HistorySize = 1000
	}
	if o.HistoryMaxAge <= 0 {
		o.HistoryMaxAge = time.Hour
	}
	if o.LiveSize <= 0 {
		o.LiveSize = 10000
	}
	if o.StartWait <= 0 {
		o.StartWait = 5 * time.Second
	}
	if o.PingInterval <= 0 {
		o.PingInterval = 10 * time.Second
	}
	return o
}

// New makes a bus for the Redis at opts.URL; it connects in Start.
func New(opts Options, log zerolog.Logger) (*Bus, error) {
	opts = opts.withDefaults()
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("redis bus: redis_url: %w", err)
	}
	// A command whose reply was lost may have run: retrying a publish could
	// deliver its events twice. Every caller copes with an error instead.
	ro.MaxRetries = -1
	if ro.DialTimeout == 0 || ro.DialTimeout > 2*time.Second {
		ro.DialTimeout = 2 * time.Second
	}
	// One dial attempt per command: while Redis is down the webhook answers
	// 503 at once, and the subscriber has its own backoff.
	ro.DialerRetries = 1
	return &Bus{
		opts:       opts,
		client:     redis.NewClient(ro),
		log:        log.With().Str("component", "redis-bus").Logger(),
		now:        time.Now,
		keyGen:     opts.Prefix + "generation",
		keyLive:    opts.Prefix + "events",
		keyDropped: opts.Prefix + "dropped",
		channel:    opts.Prefix + "events",
		firstLive:  make(chan struct{}),
		done:       make(chan struct{}),
	}, nil
}

func (b *Bus) historyKey(collection string) string {
	return b.opts.Prefix + "history:" + collection
}

// genStart is Lua computing the current generation's start ID from TIME.
const genStart = `local t = redis.call('TIME')
local start = t[1] .. string.format('%03d', math.floor(t[2] / 1000)) .. '-0'
`

// publishScript: KEYS = generation, dropped, events stream, then each
// event's history stream; ARGV = a new generation id (used when none
// exists), events stream size, history size, channel, then each event's
// collection and JSON.
var publishScript = redis.NewScript(`
local gen = redis.call('HGET', KEYS[1], 'id')
if not gen then
  ` + genStart + `
  gen = ARGV[1]
  redis.call('HSET', KEYS[1], 'id', gen, 'start', start)
end
local n = tonumber(ARGV[3])
local ids = {}
for i = 1, (#ARGV - 4) / 2 do
  local coll, data, hist = ARGV[3 + 2 * i], ARGV[4 + 2 * i], KEYS[3 + i]
  local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'e', data)
  redis.call('XADD', hist, id, 'e', data)
  local over = redis.call('XLEN', hist) - n
  if over > 0 then
    local old = redis.call('XRANGE', hist, '-', '+', 'COUNT', over)
    redis.call('HSET', KEYS[2], coll, old[#old][1])
    redis.call('XTRIM', hist, 'MAXLEN', '=', n)
  end
  redis.call('PUBLISH', ARGV[4], gen .. ' ' .. id .. ' ' .. data)
  ids[#ids + 1] = id
end
return ids
`)

// historyScript: KEYS = generation, dropped, history stream; ARGV =
// collection, since, the age cutoff's ID. It drops the events older than
// the cutoff and returns {generation start, newest dropped ID, events after
// since}.
var historyScript = redis.NewScript(`
local old = redis.call('XRANGE', KEYS[3], '-', '(' .. ARGV[3])
if #old > 0 then
  redis.call('HSET', KEYS[2], ARGV[1], old[#old][1])
  redis.call('XTRIM', KEYS[3], 'MINID', '=', ARGV[3])
end
local start = redis.call('HGET', KEYS[1], 'start')
local dropped = redis.call('HGET', KEYS[2], ARGV[1])
return {start, dropped, redis.call('XRANGE', KEYS[3], '(' .. ARGV[2], '+')}
`)

// generationScript returns the generation's id, creating the generation with
// ARGV[1] when missing (the same way publishScript does).
var generationScript = redis.NewScript(`
local gen = redis.call('HGET', KEYS[1], 'id')
if not gen then
  ` + genStart + `
  gen = ARGV[1]
  redis.call('HSET', KEYS[1], 'id', gen, 'start', start)
end
return gen
`)

// RouteLogs sends the lines go-redis writes to its process-wide logger
// (dial failures, pub/sub reconnects) to log at debug level: the bus reports
// outages itself, once. Main calls it; tests leave go-redis's default.
func RouteLogs(log zerolog.Logger) {
	redis.SetLogger(redisLog{log.With().Str("component", "go-redis").Logger()})
}

type redisLog struct{ log zerolog.Logger }

func (l redisLog) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug().Msgf(format, v...)
}

func newGenerationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Publish implements Bus.
func (b *Bus) Publish(ctx context.Context, events []broker.Event) error {
	if len(events) == 0 {
		return nil
	}
	keys := make([]string, 0, 3+len(events))
	keys = append(keys, b.keyGen, b.keyDropped, b.keyLive)
	args := make([]any, 0, 4+2*len(events))
	args = append(args, newGenerationID(), b.opts.LiveSize, b.opts.HistorySize, b.channel)
	for i := range events {
		e := events[i]
		e.ID = ""
		data, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("redis bus: encode event %d: %w", i, err)
		}
		keys = append(keys, b.historyKey(e.Collection))
		args = append(args, e.Collection, data)
	}
	ids, err := publishScript.Run(ctx, b.client, keys, args...).StringSlice()
	if err != nil {
		return fmt.Errorf("redis bus: publish %d events: %w: %w", len(events), broker.ErrBusUnavailable, err)
	}
	if len(ids) != len(events) {
		return fmt.Errorf("redis bus: publish: %w: %d ids for %d events", broker.ErrBusUnavailable, len(ids), len(events))
	}
	for i := range events {
		events[i].ID = ids[i]
	}
	return nil
}

// History implements Bus. It first drops the collection's events older than
// HistoryMaxAge, so the gap check covers age as well as count.
func (b *Bus) History(ctx context.Context, collection, since string) ([]broker.Event, bool, error) {
	cutoff := max(b.now().Add(-b.opts.HistoryMaxAge).UnixMilli(), 0)
	keys := []string{b.keyGen, b.keyDropped, b.historyKey(collection)}
	res, err := historyScript.Run(ctx, b.client, keys, collection, since, strconv.FormatInt(cutoff, 10)+"-0").Slice()
	if err != nil {
		return nil, false, fmt.Errorf("redis bus: history of %s: %w", collection, err)
	}
	if len(res) != 3 {
		return nil, false, fmt.Errorf("redis bus: history of %s: unexpected reply %v", collection, res)
	}
	start, _ := res[0].(string)
	dropped, _ := res[1].(string)
	entries, _ := res[2].([]any)
	events := make([]broker.Event, 0, len(entries))
	for _, x := range entries {
		entry, _ := x.([]any)
		if len(entry) != 2 {
			return nil, false, fmt.Errorf("redis bus: history of %s: malformed entry %v", collection, x)
		}
		id, _ := entry[0].(string)
		fields, _ := entry[1].([]any)
		if len(fields) != 2 || fields[0] != "e" {
			return nil, false, fmt.Errorf("redis bus: history of %s: malformed entry %v", collection, x)
		}
		e, err := decodeEvent(id, fields[1])
		if err != nil {
			return nil, false, fmt.Errorf("redis bus: history of %s: %w", collection, err)
		}
		events = append(events, e)
	}
	// No generation: Redis lost its data (or was never used) since since was
	// issued, so since is from before; likewise an ID older than the
	// generation's start. Otherwise events after since were lost exactly when
	// the newest dropped one is after since.
	// Known limit: stream IDs restart after Redis loses its data, so an old
	// ID from the very millisecond the new generation started is taken for a
	// new one. A restart takes far longer than that; only a FLUSHALL right
	// after a publish can hit it.
	gap := start == "" || broker.CompareIDs(since, start) < 0 || (dropped != "" && broker.CompareIDs(dropped, since) > 0)
	return events, gap, nil
}

// Ready implements Bus: Redis answers and this instance's subscription is
// established, so events published anywhere reach its subscribers.
func (b *Bus) Ready(ctx context.Context) error {
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis bus: %w: %w", broker.ErrBusUnavailable, err)
	}
	if !b.live.Load() {
		return fmt.Errorf("redis bus: %w: not subscribed to events yet", broker.ErrBusUnavailable)
	}
	return nil
}

// Start implements Bus. It waits up to StartWait for the subscription, so
// that the instance usually serves nothing before it receives events; when
// Redis is unreachable it returns anyway and keeps retrying in the
// background (Ready reports it).
func (b *Bus) Start(d broker.Dispatcher) error {
	b.mu.Lock()
	if b.started || b.closed {
		b.mu.Unlock()
		return errors.New("redis bus: already started or closed")
	}
	b.started = true
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.mu.Unlock()
	r := &subscriber{bus: b, d: d}
	go r.run(ctx)
	select {
	case <-b.firstLive:
	case <-time.After(b.opts.StartWait):
		b.log.Warn().Dur("waited", b.opts.StartWait).Msg("redis not reachable yet; serving anyway and retrying (readyz reports it)")
	}
	return nil
}

// Close implements Bus; idempotent.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	if b.cancel != nil {
		b.cancel()
	}
	if b.pubsub != nil {
		_ = b.pubsub.Close()
	}
	b.mu.Unlock()
	if started {
		<-b.done
	}
	return b.client.Close()
}

// setPubSub records ps as the subscription Close must end; false when the
// bus is already closed (ps is closed then).
func (b *Bus) setPubSub(ps *redis.PubSub) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		_ = ps.Close()
		return false
	}
	b.pubsub = ps
	return true
}

func decodeEvent(id string, data any) (broker.Event, error) {
	s, _ := data.(string)
	var e broker.Event
	if err := json.Unmarshal([]byte(s), &e); err != nil {
		return broker.Event{}, fmt.Errorf("event %s: %w", id, err)
	}
	e.ID = id
	return e, nil
}

func isNoSuchKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such key")
}

// Horizon implements Bus: the events stream's newest ID when this instance
// first subscribed.
func (b *Bus) Horizon() string {
	if h := b.horizon.Load(); h != nil {
		return *h
	}
	return ""
}
