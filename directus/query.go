package directus

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// listParams are the query parameters Directus reads as comma-separated lists.
var listParams = map[string]bool{"fields": true, "sort": true, "groupBy": true}

// listOnly are the query parameters that shape a list of items, not the
// items: a read of given keys drops them, whether it reads one key or a
// batch, so both answer alike (and Directus may refuse them on one item).
var listOnly = []string{"limit", "offset", "page", "meta", "search", "sort", "groupBy", "aggregate"}

// ItemQuery is q without the list-only parameters: what a read of given
// keys (a subscription's live read, an item subscription's check) asks.
func ItemQuery(q map[string]any) map[string]any {
	out := make(map[string]any, len(q))
	for k, v := range q {
		out[k] = v
	}
	for _, p := range listOnly {
		delete(out, p)
	}
	return out
}

// QueryValues turns an items query object ({"fields":["id"],"filter":{...},
// "limit":2}) into REST query parameters: lists comma-joined, objects as
// JSON text, scalars as text.
func QueryValues(q map[string]any) (url.Values, error) {
	v := url.Values{}
	for key, val := range q {
		switch x := val.(type) {
		case nil:
		case string:
			v.Set(key, x)
		case bool:
			v.Set(key, strconv.FormatBool(x))
		case float64:
			v.Set(key, strconv.FormatFloat(x, 'f', -1, 64))
		case json.Number:
			v.Set(key, x.String())
		case []any:
			if !listParams[key] {
				b, err := json.Marshal(x)
				if err != nil {
					return nil, fmt.Errorf("query.%s: %w", key, err)
				}
				v.Set(key, string(b))
				continue
			}
			parts := make([]string, 0, len(x))
			for _, p := range x {
				s, ok := p.(string)
				if !ok {
					return nil, fmt.Errorf("query.%s: must be a list of strings", key)
				}
				parts = append(parts, s)
			}
			v.Set(key, strings.Join(parts, ","))
		default:
			b, err := json.Marshal(x)
			if err != nil {
				return nil, fmt.Errorf("query.%s: %w", key, err)
			}
			v.Set(key, string(b))
		}
	}
	return v, nil
}
