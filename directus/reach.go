package directus

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// schemaGraph is the relations between collections, as far as a read can
// follow them: many-to-one fields (and many-to-any) and the one-to-many
// alias fields on the other side.
type schemaGraph struct {
	// m2o[collection][field] are the collections the field points to.
	m2o map[string]map[string][]string
	// o2m[collection][alias] is the collection whose items the alias lists.
	o2m map[string]map[string]string
}

func loadSchema(ctx context.Context, c *Client, token string) (*schemaGraph, error) {
	data, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"relations"}, Token: token, Kind: "model", Query: url.Values{"limit": {"-1"}}})
	if err != nil {
		return nil, fmt.Errorf("access model: read relations: %w", err)
	}
	var rels []struct {
		Collection string  `json:"collection"`
		Field      string  `json:"field"`
		Related    *string `json:"related_collection"`
		Meta       *struct {
			OneField   *string  `json:"one_field"`
			OneAllowed []string `json:"one_allowed_collections"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(data, &rels); err != nil {
		return nil, fmt.Errorf("access model: read relations: %w", err)
	}
	g := &schemaGraph{m2o: map[string]map[string][]string{}, o2m: map[string]map[string]string{}}
	for _, r := range rels {
		var targets []string
		if r.Related != nil {
			targets = []string{*r.Related}
		} else if r.Meta != nil {
			targets = r.Meta.OneAllowed // many-to-any
		}
		if g.m2o[r.Collection] == nil {
			g.m2o[r.Collection] = map[string][]string{}
		}
		g.m2o[r.Collection][r.Field] = targets
		if r.Related != nil && r.Meta != nil && r.Meta.OneField != nil && *r.Meta.OneField != "" {
			if g.o2m[*r.Related] == nil {
				g.o2m[*r.Related] = map[string]string{}
			}
			g.o2m[*r.Related][*r.Meta.OneField] = r.Collection
		}
	}
	return g, nil
}

// maxReachDepth bounds how deep a query's paths are followed; deeper is
// treated as reaching everything.
const maxReachDepth = 12

// queryKeysKnown are the query keys whose effect on what is read reach
// understands; any other makes it answer "everything".
var queryKeysKnown = map[string]bool{
	"fields": true, "filter": true, "deep": true, "sort": true, "alias": true, "groupBy": true,
	"aggregate": true, "search": true, "limit": true, "offset": true, "page": true, "meta": true,
	"version": true, "backlink": true,
}

// reach returns the collections a read of collection with q can touch, so
// whose read rules can shape its answer: collection itself, and every
// collection a field, filter, sort, deep, alias, groupBy or aggregate path
// follows a relation into. A many-to-one field read bare is the raw key
// (Directus does not read the related item), a one-to-many field lists the
// related keys the reader may see (it reads them). all is true when reach
// cannot tell (an unknown key, a $FOLLOW, paths too deep): every collection
// may matter then.
func (g *schemaGraph) reach(collection string, q map[string]any) (touched map[string]bool, all bool) {
	r := &reacher{g: g, touched: map[string]bool{collection: true}}
	for k := range q {
		if !queryKeysKnown[k] {
			return nil, true
		}
	}
	fields, ok := q["fields"]
	if !ok {
		fields = []any{"*"} // Directus's default
	}
	r.paths(collection, fields)
	r.filter(collection, q["filter"], 0)
	r.paths(collection, q["sort"])
	r.paths(collection, q["groupBy"])
	if agg, ok := q["aggregate"].(map[string]any); ok {
		for _, v := range agg {
			r.paths(collection, v)
		}
	} else if q["aggregate"] != nil {
		r.all = true
	}
	if alias, ok := q["alias"].(map[string]any); ok {
		for _, v := range alias {
			if s, ok := v.(string); ok {
				r.path(collection, s+".*") // an alias reads a relation under another name
			} else {
				r.all = true
			}
		}
	} else if q["alias"] != nil {
		r.all = true
	}
	r.deep(collection, q["deep"], 0)
	return r.touched, r.all
}

type reacher struct {
	g       *schemaGraph
	touched map[string]bool
	all     bool
}

// paths follows each path of v: a string (comma-separated) or a list.
func (r *reacher) paths(coll string, v any) {
	switch x := v.(type) {
	case nil:
	case string:
		for _, p := range strings.Split(x, ",") {
			r.path(coll, strings.TrimSpace(p))
		}
	case []any:
		for _, p := range x {
			if s, ok := p.(string); ok {
				r.path(coll, s)
			} else {
				r.all = true
			}
		}
	default:
		r.all = true
	}
}

// path follows one dotted path ("author.name", "-date", "count(comments)",
// "item:articles.title", "*.*").
func (r *reacher) path(coll, p string) {
	p = strings.TrimPrefix(strings.TrimSpace(p), "-")
	if p == "" {
		return
	}
	if strings.HasPrefix(p, "$") {
		r.all = true // $FOLLOW and the like
		return
	}
	segs := strings.Split(p, ".")
	if len(segs) > maxReachDepth {
		r.all = true
		return
	}
	r.walk(coll, segs)
}

func (r *reacher) walk(coll string, segs []string) {
	if len(segs) == 0 || r.all {
		return
	}
	seg, rest := segs[0], segs[1:]
	if i := strings.IndexByte(seg, '('); i >= 0 && strings.HasSuffix(seg, ")") {
		seg = seg[i+1 : len(seg)-1] // count(comments), year(date)
	}
	if seg == "*" {
		for f := range r.g.o2m[coll] {
			r.step(coll, f, "", rest)
		}
		for f := range r.g.m2o[coll] {
			r.step(coll, f, "", rest)
		}
		return
	}
	field, only, _ := strings.Cut(seg, ":") // many-to-any: item:articles
	r.step(coll, field, only, rest)
}

// step reads field of coll, then rest of the related collection(s).
func (r *reacher) step(coll, field, only string, rest []string) {
	if many, ok := r.g.o2m[coll][field]; ok {
		r.touched[many] = true
		r.walk(many, rest)
		return
	}
	targets, ok := r.g.m2o[coll][field]
	if !ok || len(rest) == 0 {
		return // a plain field, or a many-to-one key read bare
	}
	for _, t := range targets {
		if only != "" && t != only {
			continue
		}
		r.touched[t] = true
		r.walk(t, rest)
	}
}

// filter follows the field paths of a filter object: keys that are not
// operators are fields; an object under a field is a relation's filter.
func (r *reacher) filter(coll string, v any, depth int) {
	if v == nil || r.all {
		return
	}
	if depth > maxReachDepth {
		r.all = true
		return
	}
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			switch {
			case k == "_and" || k == "_or":
				list, _ := sub.([]any)
				for _, item := range list {
					r.filter(coll, item, depth+1)
				}
			case strings.HasPrefix(k, "$"):
				r.all = true
			case strings.HasPrefix(k, "_"):
				// an operator on the field above; _some/_none keep the level
				if k == "_some" || k == "_none" {
					r.filter(coll, sub, depth+1)
				}
			default:
				field, only, _ := strings.Cut(k, ":")
				r.filterField(coll, field, only, sub, depth)
			}
		}
	case []any:
		for _, item := range x {
			r.filter(coll, item, depth+1)
		}
	default:
		r.all = true
	}
}

// filterField handles {field: sub}: sub holds operators on field, or (for
// a relation) a filter of the related collection.
func (r *reacher) filterField(coll, field, only string, sub any, depth int) {
	if i := strings.IndexByte(field, '('); i >= 0 && strings.HasSuffix(field, ")") {
		field = field[i+1 : len(field)-1]
	}
	related := func(next string) {
		r.touched[next] = true
		r.filter(next, sub, depth+1)
	}
	if many, ok := r.g.o2m[coll][field]; ok {
		related(many)
		return
	}
	m, isMap := sub.(map[string]any)
	if !isMap {
		return
	}
	nested := false
	for k := range m {
		if !strings.HasPrefix(k, "_") {
			nested = true
		}
	}
	if !nested {
		return // operators on the field itself (a many-to-one compares its key)
	}
	for _, t := range r.g.m2o[coll][field] {
		if only == "" || t == only {
			related(t)
		}
	}
}

// deep follows a deep object: its keys are relations, their values nested
// queries (_filter, _sort...) of the related collection.
func (r *reacher) deep(coll string, v any, depth int) {
	if v == nil || r.all {
		return
	}
	m, ok := v.(map[string]any)
	if !ok || depth > maxReachDepth {
		r.all = true
		return
	}
	for k, sub := range m {
		if strings.HasPrefix(k, "_") {
			continue
		}
		field, only, _ := strings.Cut(k, ":")
		var targets []string
		if many, ok := r.g.o2m[coll][field]; ok {
			targets = []string{many}
		} else {
			for _, t := range r.g.m2o[coll][field] {
				if only == "" || t == only {
					targets = append(targets, t)
				}
			}
		}
		nested, _ := sub.(map[string]any)
		for _, t := range targets {
			r.touched[t] = true
			if nested != nil {
				r.filter(t, nested["_filter"], depth+1)
				r.paths(t, nested["_sort"])
				r.deep(t, nested, depth+1)
			}
		}
	}
}
