package broker

import (
	"context"
	"encoding/json"
	"time"
)

// Cluster shares a group's reads between the instances of a cluster that
// hold members of it (issue 24, docs/design/cluster-reads.md): one of them
// reads, the others deliver its result as if they had read it. nil in
// Options: every instance reads for its own groups.
//
// A group is named across instances by its cluster key (ClusterKey):
// collection, access class, query and the access model's fingerprint,
// so instances share only while they apply the same model. Groups whose
// reads are made apart (a pending access change) never share.
type Cluster interface {
	// Reads reports whether this instance reads for the group itself (it
	// is the group's reader, or cannot rely on one now).
	Reads(key string) bool
	// Publishes reports whether this instance's results of the group are
	// awaited by other instances.
	Publishes(key string) bool
	// Reading tells the others this instance is reading for the group (a
	// heartbeat: a slow read is not taken over while it lasts).
	Reading(key string)
	// Publish sends the group's results, one per event.
	Publish(key string, results []Result)
	// Await waits for the results of the events ids of the group; false
	// when one did not come in time or says the read failed (the caller
	// then reads itself).
	Await(ctx context.Context, key string, ids []string) (map[string]Result, bool)
}

// Result is a reader's read of one event's keys for a group: the items
// the group may read (a key absent: not readable), or a failed read.
type Result struct {
	EventID string                     `json:"e"`
	Failed  bool                       `json:"f,omitempty"`
	Items   map[string]json.RawMessage `json:"i,omitempty"`
}

// Fingerprinter is implemented by a Classifier whose classes depend on a
// model read from Directus: instances share a group's reads only while
// their fingerprints are equal.
type Fingerprinter interface {
	Fingerprint() string
}

// ClusterKey names g across the instances of a cluster.
func (b *Broker) clusterKey(g *group) string {
	fp := ""
	if f, ok := b.opts.Classifier.(Fingerprinter); ok {
		fp = f.Fingerprint()
	}
	return g.collection + "\x00" + g.class + "\x00" + g.queryKey + "\x00" + fp
}

// ClusterKeys are the cluster keys of the groups this instance holds
// members of (what it announces).
func (b *Broker) ClusterKeys() []string {
	b.index.mu.RLock()
	var groups []*group
	for _, gs := range b.index.collections {
		for _, g := range gs {
			groups = append(groups, g)
		}
	}
	b.index.mu.RUnlock()
	keys := make([]string, 0, len(groups))
	for _, g := range groups {
		keys = append(keys, b.clusterKey(g))
	}
	return keys
}

// readsFor reports whether g reads e's keys: the events a reader's result
// covers (deletes need no read).
func readsFor(g *group, e Event) bool {
	return e.Action != ActionDelete && g.wants(e.Action) && len(e.Keys) > 0
}

// awaitEvents are the events of a batch whose keys g reads.
func awaitEvents(g *group, events []Event) []string {
	var ids []string
	for _, e := range events {
		if readsFor(g, e) {
			ids = append(ids, e.ID)
		}
	}
	return ids
}

// sharedItems are a batch's items as the cluster's reader read them for a
// group, and how long they were waited for.
type sharedItems struct {
	items  map[string]json.RawMessage
	waited time.Duration
}

// awaitShared waits, before the group takes a read slot (a wait holding
// one could starve the reads the other instances' waits depend on), for
// the reader's results of a batch; nil when this instance reads itself
// (it is the reader, there is nothing to read, the group reads apart
// during an access change, or no result came in time: a takeover).
func (b *Broker) awaitShared(ctx context.Context, g *group, events []Event) *sharedItems {
	if b.opts.Cluster == nil {
		return nil
	}
	ids := awaitEvents(g, events) // none: nothing to read (deletes only)
	if len(ids) == 0 {
		return nil
	}
	if pending := b.doubts.events(); pending != nil && b.apart(g, pending) != nil {
		return nil
	}
	key := b.clusterKey(g)
	if b.opts.Cluster.Reads(key) {
		return nil
	}
	start := time.Now()
	results, ok := b.opts.Cluster.Await(ctx, key, ids)
	if !ok {
		b.metrics.ClusterTakeovers.Add(1)
		return nil
	}
	items := map[string]json.RawMessage{}
	for _, e := range events { // in order: a later event's read of a key wins
		for k, v := range results[e.ID].Items {
			items[k] = v
		}
	}
	b.metrics.ClusterResults.Add(int64(len(ids)))
	return &sharedItems{items: items, waited: time.Since(start)}
}

// publishItems sends the reader's read of each event of the batch.
func (b *Broker) publishItems(key string, g *group, events []Event, items map[string]json.RawMessage, err error) {
	var results []Result
	for _, e := range events {
		if !readsFor(g, e) {
			continue
		}
		r := Result{EventID: e.ID, Failed: err != nil}
		if err == nil {
			for _, k := range e.Keys {
				if v, ok := items[k]; ok {
					if r.Items == nil {
						r.Items = map[string]json.RawMessage{}
					}
					r.Items[k] = v
				}
			}
		}
		results = append(results, r)
	}
	if len(results) > 0 {
		b.opts.Cluster.Publish(key, results)
	}
}

// heartbeat tells the others, until stop is closed, that this instance is
// reading for key.
func (b *Broker) heartbeat(key string, every time.Duration) (stop func()) {
	done := make(chan struct{})
	b.opts.Cluster.Reading(key)
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				b.opts.Cluster.Reading(key)
			}
		}
	}()
	return func() { close(done) }
}
