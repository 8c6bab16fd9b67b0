package broker

import (
	"context"
	"encoding/json"
	"errors"
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
		key, _ := json.Marshal([]any{shareClass, g.collection, g.query.Key(), shared, batch})
		type result struct {
			items   map[string]json.RawMessage
			refused []string
		}
		v, joined, err := b.splitReads.Do(ctx, string(key), func(ctx context.Context) (any, error) {
			got, r, err := b.read(ctx, g, g.members(), shared, false)
			return result{got, r}, err
		})
		res, _ := v.(result)
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
