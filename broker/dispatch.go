package broker

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// maxBatch bounds how many queued events one dispatch round takes.
const maxBatch = 256

// work runs a shard. Events already queued are dispatched together: each
// group then reads the keys of the whole batch at once. A burst (an import
// fires one POST per row) thus costs a few reads per group instead of one
// per event, and an idle broker adds no delay waiting for a batch to fill.
// Control tasks (attach, rebind, barriers) run between two rounds, in queue
// order relative to the events: every event before them has been handed to
// the groups' pipelines; a task that needs them delivered waits for the
// pipelines it touches (see pipe.go).
func (b *Broker) work(sh *shard) {
	defer b.wg.Done()
	buf := make([]Event, 0, maxBatch)
	for {
		events, ctrl, ok := sh.queue.next(buf, maxBatch, b.done)
		if !ok {
			return
		}
		if ctrl != nil {
			ctrl()
			continue
		}
		b.dispatchBatch(sh, events)
	}
}

// dispatchBatch fans out events (in publish order) collection by
// collection; each collection's events keep their order for every group.
func (b *Broker) dispatchBatch(sh *shard, events []Event) {
	if b.stopping.Load() {
		b.skip(events)
		return
	}
	if oldest := oldestReceived(events); !oldest.IsZero() {
		sh.busySince.Store(oldest.UnixNano())
		defer sh.busySince.Store(0)
	}
	for len(events) > 0 {
		coll := events[0].Collection
		same, rest := events[:0:0], events[:0:0]
		for _, e := range events {
			if e.Collection == coll {
				same = append(same, e)
			} else {
				rest = append(rest, e)
			}
		}
		b.dispatchCollection(sh, coll, same)
		events = rest
	}
}

// dispatchCollection hands one collection's events (a fresh slice) to its
// groups' pipelines, in fair order.
func (b *Broker) dispatchCollection(sh *shard, coll string, events []Event) {
	sh.last[coll] = events[len(events)-1].ID
	b.metrics.EventsDispatched.Add(int64(len(events)))
	for _, g := range b.index.groups(coll) {
		b.pipeTo(sh, g, events)
	}
}

// oldestReceived is the earliest receive time of events (zero if none).
func oldestReceived(events []Event) time.Time {
	var oldest time.Time
	for _, e := range events {
		if !e.Received.IsZero() && (oldest.IsZero() || e.Received.Before(oldest)) {
			oldest = e.Received
		}
	}
	return oldest
}

// deliver reads the keys of events once for g, then sends each event, in
// order, to g's subscriptions as g may see it. It returns the read's error
// (after telling g's subscribers what they missed).
// shared, when set, holds the items another instance of the cluster read
// for g (awaitShared): nothing is read here then.
func (b *Broker) deliver(ctx context.Context, g *group, events []Event, shared *sharedItems) error {
	if pending := b.doubts.events(); pending != nil {
		if parts := b.apart(g, pending); parts != nil {
			return b.deliverApart(ctx, g, events, parts)
		}
	}
	keys, deleted := keysToRead(g, events)
	var (
		items   map[string]json.RawMessage
		refused []string
		err     error
		readDur time.Duration
	)
	// Another instance read for g (issue 24): its results are the items,
	// exactly what this instance's read would have been.
	clusterKey, fromCluster := "", shared != nil && len(keys) > 0
	if fromCluster {
		items, readDur, keys = shared.items, shared.waited, nil
	}
	if b.opts.Cluster != nil && len(keys) > 0 {
		clusterKey = b.clusterKey(g)
	}
	var stopBeat func()
	if clusterKey != "" && b.opts.Cluster.Publishes(clusterKey) {
		stopBeat = b.heartbeat(clusterKey, heartbeatEvery)
	}
	if kf, ok := b.opts.Classifier.(KeyFilter); ok && len(keys) > 0 {
		if readable, ok := kf.Readable(ctx, g.class, g.collection, keys, batchID(events)); ok {
			keys = readable // the others read as nothing for g
		}
	}
	split := false
	if ks, ok := b.opts.Classifier.(KeySplitter); ok && len(keys) > 0 {
		if own, shared, shareClass, ok := ks.Split(ctx, g.class, g.collection, keys, batchID(events)); ok {
			split = true
			start := time.Now()
			items, refused, err = b.readSplit(ctx, g, own, shared, shareClass, batchID(events))
			readDur = time.Since(start)
		}
	}
	if len(keys) > 0 && !split {
		start := time.Now()
		items, refused, err = b.read(ctx, g, g.members(), keys, g.shareReads)
		readDur = time.Since(start)
	}
	if stopBeat != nil {
		stopBeat()
		b.publishItems(clusterKey, g, events, items, err)
	}
	if (len(keys) > 0 || fromCluster) && err == nil {
		g.mu.Lock()
		g.missing = false // a run of failed reads, if any, ended
		g.mu.Unlock()
	}
	for _, e := range events {
		if !g.wants(e.Action) {
			continue
		}
		if e.Action != ActionDelete && err != nil {
			b.readFailed(g, e, err)
			continue
		}
		d, ok := view(e, items, deleted, g.known.isHidden)
		g.known.observe(e, items, deleted)
		if ok {
			b.send(g, e.Action, d)
		}
	}
	// After the notices of what they missed: their tokens were refused.
	for _, token := range refused {
		b.tokenRefused(g, token)
	}
	if ev := b.log.Debug(); ev.Enabled() {
		for _, e := range events {
			b.log.Debug().Str("event", e.ID).Str("collection", e.Collection).Strs("keys", e.Keys).Int64("read_us", readDur.Microseconds()).
				Int64("queued_us", time.Now().UnixMicro()).Msg("event delivered to a group")
		}
	}
	return err
}

// heartbeatEvery is how often a reader tells the others it is still
// reading (Cluster.Reading).
const heartbeatEvery = 150 * time.Millisecond

// batchID names a batch of events (its first and last ids).
func batchID(events []Event) string {
	return events[0].ID + ".." + events[len(events)-1].ID
}

// keysToRead lists the keys of the batch that g must read (in first-seen
// order), and the keys the batch deletes.
func keysToRead(g *group, events []Event) (keys []string, deleted map[string]bool) {
	seen := map[string]bool{}
	for _, e := range events {
		if e.Action == ActionDelete {
			if deleted == nil {
				deleted = map[string]bool{}
			}
			for _, k := range e.Keys {
				deleted[k] = true
			}
			continue
		}
		if !g.wants(e.Action) {
			continue
		}
		for _, k := range e.Keys {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	return keys, deleted
}

// maxReadTokens bounds how many members' tokens one read tries when Directus
// refuses them one after another.
const maxReadTokens = 4

// errNoReader means no member of the group has a token to read with: every
// one is suspended or was refused.
var errNoReader = errors.New("no subscriber with a working token")

// read reads keys for g with a live member's token. The subscriptions
// holding a token Directus refuses are suspended at once (they are told of
// what they miss instead of getting data) and the read is retried with
// another member's token: nothing unfiltered is ever sent, and one expired
// member does not cost the others the event. The refused tokens are
// returned, for tokenRefused once the batch was delivered.
// members are those whose tokens may read (a group's, or a part of it read
// apart); share lets the read join a concurrent one of its class (replays).
func (b *Broker) read(ctx context.Context, g *group, members []*Subscription, keys []string, share bool) (map[string]json.RawMessage, []string, error) {
	var refused []string
	tried := map[string]bool{}
	for range maxReadTokens {
		token, ok := readToken(members, tried)
		if !ok {
			break
		}
		items, err := b.readItems(ctx, g, token, keys, share)
		if err == nil {
			return items, refused, nil
		}
		b.metrics.ReadErrors.Add(1)
		if !errors.Is(err, ErrTokenExpired) {
			return nil, refused, err
		}
		tried[token] = true
		refused = append(refused, token)
		for _, s := range members {
			if s.Token() == token {
				s.suspended.Store(true)
			}
		}
	}
	if len(refused) > 0 {
		return nil, refused, ErrTokenExpired
	}
	return nil, nil, errNoReader
}

// readItems is one read of keys for g with token; a group that shares reads
// (a replay) joins a concurrent read of its class, query and keys.
func (b *Broker) readItems(ctx context.Context, g *group, token string, keys []string, share bool) (map[string]json.RawMessage, error) {
	read := func(ctx context.Context) (map[string]json.RawMessage, error) {
		b.metrics.Reads.Add(1)
		rctx, cancel := context.WithTimeout(WithClientAddr(ctx, g.addr), b.opts.ReadTimeout)
		defer cancel()
		return b.reader.ReadItems(rctx, token, g.collection, keys, g.query)
	}
	if !share {
		return read(ctx)
	}
	key, _ := json.Marshal([]any{g.class, g.collection, g.queryKey, keys})
	v, shared, err := b.replayReads.Do(ctx, string(key), func(ctx context.Context) (any, error) { return read(ctx) })
	if shared && errors.Is(err, ErrTokenExpired) {
		return read(ctx) // the sharer's token was refused; this one may work
	}
	items, _ := v.(map[string]json.RawMessage)
	return items, err
}

// tokenRefused tells the sinks of g's subscriptions reading with token that
// Directus refused it.
func (b *Broker) tokenRefused(g *group, token string) { b.tokenRefusedTo(g.members(), token) }

// tokenRefusedTo is tokenRefused for members (a group's, or a part of it).
func (b *Broker) tokenRefusedTo(members []*Subscription, token string) {
	for _, s := range members {
		if s.Token() == token && !s.closed.Load() {
			s.Sink.TokenExpired(token)
		}
	}
}

// view is e as a group may see it, given what its read returned and which
// keys its latest reads showed hidden; ok is false when it sees nothing.
// It changes nothing: keyMemory.observe records what the read showed.
func view(e Event, items map[string]json.RawMessage, deleted map[string]bool, hidden func(string) bool) (*Delivery, bool) {
	d := &Delivery{Event: e}
	if e.Action == ActionDelete {
		var raw []json.RawMessage
		for i, k := range e.Keys {
			if !hidden(k) {
				d.Keys = append(d.Keys, k)
				if len(e.RawKeys) == len(e.Keys) {
					raw = append(raw, e.RawKeys[i])
				}
			}
		}
		if len(d.Keys) == 0 {
			return nil, false
		}
		d.Payload, _ = json.Marshal(d.Keys)
		d.Data = d.Payload
		if raw != nil {
			d.RawKeys = jsonArray(raw)
		}
		return d, true
	}
	data := make([]json.RawMessage, 0, len(e.Keys))
	for _, k := range e.Keys {
		if item, visible := items[k]; visible {
			d.Keys = append(d.Keys, k)
			data = append(data, item)
		}
	}
	if len(data) == 0 {
		return nil, false
	}
	d.Data = jsonArray(data)
	d.Payload = restrictPayload(e, data)
	return d, true
}

// observe records what delivering e showed: a create or update remembers
// whether the read showed each key; a delete forgets the keys it was sent
// for, but keeps those it was withheld for, so a resume replaying it
// withholds it too. A key deleted later in the same batch reads as missing,
// which says nothing about whether the group could see it, so it is not
// recorded.
func (k *keyMemory) observe(e Event, items map[string]json.RawMessage, deleted map[string]bool) {
	for _, key := range e.Keys {
		if e.Action == ActionDelete {
			k.forgetVisible(key)
			continue
		}
		if _, visible := items[key]; visible || !deleted[key] {
			k.record(key, visible)
		}
	}
}

// send encodes d once per distinct (encoder, uid) and queues it for every
// subscription of g that wants action; suspended ones are told they missed
// the event instead.
func (b *Broker) send(g *group, action Action, d *Delivery) { b.sendTo(g.members(), action, d) }

// sendTo is send to members (a group's, or a part of them).
func (b *Broker) sendTo(members []*Subscription, action Action, d *Delivery) {
	type frameKey struct {
		enc Encoder
		uid string
	}
	var (
		lastKey   frameKey
		lastFrame []byte
		frames    map[frameKey][]byte
		sent      int64
	)
	if b.stopping.Load() {
		return // a shutdown: Stop tells the subscriptions what they miss
	}
	// One copy of the id for every subscription (a pointer into d would
	// keep the event's data alive until the group's next event).
	id := new(string)
	*id = d.Event.ID
	for _, s := range members {
		if !s.Actions.Has(action) || s.closed.Load() {
			continue
		}
		if s.suspended.Load() {
			b.missed(s, d.Event, expiredNotice)
			continue
		}
		if snap := s.snapshot.Load(); snap != nil {
			if action == ActionDelete {
				snap.forget(d.Keys)
			} else if action == ActionCreate && snap.holdsAll(d.Keys) {
				continue // the snapshot already showed it
			}
		}
		k := frameKey{s.Encoder, string(s.UID)}
		frame := lastFrame
		if lastFrame == nil || k != lastKey {
			if frames == nil {
				frames = map[frameKey][]byte{}
			}
			if frame = frames[k]; frame == nil {
				frame = s.Encoder.Event(d, s.UID)
				frames[k] = frame
			}
			lastKey, lastFrame = k, frame
		}
		s.deliver(frame, id, action, d.Keys)
		sent++
	}
	b.metrics.FramesSent.Add(sent)
}

const (
	readFailedNotice = "events from this one on could not be read from Directus and were not delivered; resume with since (the id before this one) once events arrive again"
	expiredNotice    = "events from this one on are not delivered because your token expired; authenticate again, then resume with since (the id before this one)"
)

// missed tells a suspended s it did not get e — once per run of missed
// events (a notice per event would be a flood: an expired token misses
// every event until it is renewed).
func (b *Broker) missed(s *Subscription, e Event, message string) {
	b.metrics.EventsMissed.Add(1)
	if s.missing.Swap(true) {
		return // this run was reported at its first event
	}
	s.deliver(s.Encoder.Notice(s, Notice{Code: "EVENTS_MISSED", EventID: e.ID, Message: message}), &e.ID, "", nil)
}

// readFailed tells g's subscribers they missed e: nothing unfiltered is ever
// sent in place of a failed read. A run of failed reads (Directus down) is
// told once, at its first event, with a notice encoded once per (encoder,
// uid): the subscribers resume from before that event once events flow
// again. The run ends with the group's next successful read.
func (b *Broker) readFailed(g *group, e Event, err error) {
	if b.stopping.Load() {
		return // the read was cancelled by Stop, which tells them
	}
	members := g.members()
	b.metrics.EventsMissed.Add(int64(len(members)))
	g.mu.Lock()
	inRun := g.missing
	g.missing = true
	g.mu.Unlock()
	if inRun {
		return
	}
	expired := errors.Is(err, ErrTokenExpired) || errors.Is(err, errNoReader)
	b.log.Warn().Err(err).Str("collection", e.Collection).Str("event", e.ID).
		Int("subscribers", len(members)).Bool("token_expired", expired).Msg("read for delivery failed; subscribers told they miss events from this one until reads work again")
	msg := readFailedNotice
	if expired {
		msg = expiredNotice
	}
	n := Notice{Code: "EVENTS_MISSED", EventID: e.ID, Message: msg}
	type key struct {
		enc Encoder
		uid string
	}
	frames := map[key][]byte{}
	for _, s := range members {
		if s.closed.Load() || !s.Actions.Has(e.Action) {
			continue
		}
		k := key{s.Encoder, string(s.UID)}
		f := frames[k]
		if f == nil {
			f = s.Encoder.Notice(s, n)
			frames[k] = f
		}
		s.deliver(f, &e.ID, "", nil)
	}
}

// restrictPayload keeps only what the group read: for create the item itself
// (an array for several keys), for update the changed fields with the values
// the group's read returned.
func restrictPayload(e Event, data []json.RawMessage) json.RawMessage {
	if e.Action == ActionCreate {
		if len(data) == 1 {
			return data[0]
		}
		return jsonArray(data)
	}
	var changed map[string]json.RawMessage
	_ = json.Unmarshal(e.Payload, &changed)
	var item map[string]json.RawMessage
	_ = json.Unmarshal(data[0], &item)
	kept := make(map[string]json.RawMessage, len(changed))
	for field := range changed {
		if v, ok := item[field]; ok {
			kept[field] = v
		}
	}
	out, _ := json.Marshal(kept)
	return out
}

// jsonArray joins items (valid JSON read from Directus) into an array
// without re-validating them, as json.Marshal would.
func jsonArray(items []json.RawMessage) json.RawMessage {
	n := 2
	for _, it := range items {
		n += len(it) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, it := range items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, it...)
	}
	return append(out, ']')
}
