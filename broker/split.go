package broker

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
)

// readSplit is read for a group whose keys a KeySplitter split: own read
// with the group's tokens, shared read once for every class of shareClass
// reading the same keys of the same batch with the same query (the first
// group to ask reads with its own tokens, and it is a group whose members
// the splitter put none of those keys in own for).
func (b *Broker) readSplit(ctx context.Context, g *group, own, shared []string, shareClass, batch string) (map[string]json.RawMessage, []string, error) {
	items := map[string]json.RawMessage{}
	var refused []string
	if len(own) > 0 {
		mine, r, err := b.read(ctx, g, g.members(), own, false)
		refused = append(refused, r...)
		if err != nil {
			return nil, refused, err
		}
		for k, v := range mine {
			items[k] = v
		}
	}
	if len(shared) > 0 {
		key, _ := json.Marshal([]any{shareClass, g.collection, g.queryKey, shared, batch})
		if got, ok := b.splitDone.get(string(key)); ok {
			// Read for this batch already, by another class of shareClass
			// (whose pipeline ran first): its answer is this class's too.
			for k, item := range got {
				items[k] = item
			}
			return items, refused, nil
		}
		v, joined, err := b.splitReads.Do(ctx, string(key), func(ctx context.Context) (any, error) {
			got, r, err := b.read(ctx, g, g.members(), shared, false)
			if err == nil {
				b.splitDone.put(string(key), got)
			}
			return splitResult{got, r}, err
		})
		res, _ := v.(splitResult)
		if !joined {
			refused = append(refused, res.refused...) // its tokens: its members
		}
		if joined && errors.Is(err, ErrTokenExpired) {
			// The sharer's token was refused; this group's may work.
			res.items, res.refused, err = b.read(ctx, g, g.members(), shared, false)
			refused = append(refused, res.refused...)
		}
		if err != nil {
			return nil, refused, err
		}
		for k, item := range res.items {
			items[k] = item
		}
	}
	return items, refused, nil
}

type splitResult struct {
	items   map[string]json.RawMessage
	refused []string
}

// splitMemo keeps the shared reads of the last batches: the classes of a
// share class read one batch when their pipelines get to it, which under
// load (thousands of classes of one user each, 32 read slots) is after the
// first one's read ended, too late to join it. Every class of a share
// class answers those keys alike, so the answer read for the batch is
// theirs too. Bounded: the oldest entry goes first.
type splitMemo struct {
	mu      sync.Mutex
	entries map[string]map[string]json.RawMessage
	order   []string
}

const maxSplitMemo = 256

func (m *splitMemo) get(key string) (map[string]json.RawMessage, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.entries[key]
	return v, ok
}

func (m *splitMemo) put(key string, items map[string]json.RawMessage) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = map[string]map[string]json.RawMessage{}
	}
	if _, ok := m.entries[key]; ok {
		return
	}
	m.entries[key] = items
	m.order = append(m.order, key)
	if len(m.order) > maxSplitMemo {
		delete(m.entries, m.order[0])
		m.order = m.order[1:]
	}
}
