package directus

import "strings"

// schemaGraph is the relations between collections, as far as a read can
// follow them: many-to-one fields (and many-to-any) and the one-to-many
// alias fields on the other side.
type schemaGraph struct {
	// m2o[collection][field] are the collections the field points to.
	m2o map[string]map[string][]string
	// o2m[collection][alias] is the collection whose items the alias lists.
	o2m map[string]map[string]string
	// fields[collection][field] is true for a field whose metadata says it
	// is relational, false for a plain one: the fields the service user
	// sees.
	fields map[string]map[string]fieldKind
	// known marks the collections whose every field the service user sees
	// (so every relation from them that it can follow): only there can a
	// path be proven to stay on plain fields.
	known map[string]bool
	// pk[collection] is the primary key field, where the service user sees it.
	pk map[string]string
}

// fieldKind is what a field's metadata says it is.
type fieldKind uint8

const (
	fieldPlain fieldKind = iota // a column of the collection
	fieldKey                    // a column holding a related key (many-to-one, a file)
	fieldAlias                  // no column: a relation's alias (one-to-many, m2m, m2a, translations)
)

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
	r := &reacher{g: g, touched: map[string]bool{collection: true}, root: collection}
	for k := range q {
		if !queryKeysKnown[k] {
			return nil, true
		}
	}
	if !g.known[collection] {
		return nil, true // the collection's own fields are not all visible
	}
	if alias, ok := q["alias"].(map[string]any); ok {
		r.aliases = map[string]string{}
		for name, v := range alias {
			s, ok := v.(string)
			if !ok || strings.ContainsAny(s, ".,()$") {
				return nil, true
			}
			r.aliases[name] = s
		}
		for _, s := range r.aliases {
			r.path(collection, s+".*") // an alias reads a relation under another name
		}
	} else if q["alias"] != nil {
		return nil, true
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
	r.deep(collection, q["deep"], 0)
	if _, ok := q["version"]; ok {
		// A version is read from directus_versions under the reader's rules
		// on it (classes make such a read per user as well).
		r.touched["directus_versions"] = true
	}
	if r.all {
		return nil, true
	}
	return r.touched, false
}

type reacher struct {
	g       *schemaGraph
	touched map[string]bool
	all     bool
	// aliases are the query's alias names (alias → the field it reads), at
	// the level of the collection read.
	aliases map[string]string
	root    string
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

// unwrap strips a function: count(comments), year(date).
func unwrap(seg string) string {
	if i := strings.IndexByte(seg, '('); i >= 0 && strings.HasSuffix(seg, ")") {
		return seg[i+1 : len(seg)-1]
	}
	return seg
}

// resolve is the field a segment of coll names: an alias of the query read
// at the top level stands for its field.
func (r *reacher) resolve(coll, seg string) string {
	if coll == r.root {
		if f, ok := r.aliases[seg]; ok {
			return f
		}
	}
	return seg
}

func (r *reacher) walk(coll string, segs []string) {
	if len(segs) == 0 || r.all {
		return
	}
	if !r.g.known[coll] {
		r.all = true // its fields and relations are not all visible: nothing is proven
		return
	}
	seg, rest := r.resolve(coll, unwrap(segs[0])), segs[1:]
	if seg == "*" {
		for f, kind := range r.g.fields[coll] {
			if kind == fieldPlain && r.g.m2o[coll][f] == nil {
				continue // *.x reads a plain field as itself
			}
			r.step(coll, f, "", rest)
		}
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

// step reads field of coll, then rest of the related collection(s). A
// field reach cannot prove to be plain or a relation it sees (unknown, or
// relational by its metadata with the relation hidden) reaches everything
// as soon as anything is read through it.
func (r *reacher) step(coll, field, only string, rest []string) {
	if r.all {
		return
	}
	if many, ok := r.g.o2m[coll][field]; ok {
		r.touched[many] = true
		r.walk(many, rest)
		return
	}
	if targets, ok := r.g.m2o[coll][field]; ok {
		if len(rest) == 0 && only == "" {
			return // a many-to-one key read bare
		}
		for _, t := range targets {
			if t == anyCollection {
				r.all = true
				return
			}
			r.touched[t] = true
			if only != "" && t != only {
				// A many-to-any read for one of its collections
				// (item:articles.title) still reads the others' keys,
				// permission-checked: a key the reader may not read is null
				// (measured on 11.17.4, the differential test's seed 104).
				continue
			}
			r.walk(t, rest)
		}
		return
	}
	kind, ok := r.g.fields[coll][field]
	switch {
	case !ok:
		r.all = true // not a field the broker knows (an alias, a typo, a hidden field)
	case kind == fieldAlias:
		r.all = true // a relation's alias whose relation is hidden
	case len(rest) > 0:
		r.all = true // a path through a field without a visible relation
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
				if list == nil {
					r.all = true
				}
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
				field, only, _ := strings.Cut(r.resolve(coll, unwrap(k)), ":")
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
	if !r.g.known[coll] {
		r.all = true
		return
	}
	related := func(next string) {
		r.touched[next] = true
		r.filter(next, sub, depth+1)
	}
	if many, ok := r.g.o2m[coll][field]; ok {
		related(many)
		return
	}
	nested := false
	if m, isMap := sub.(map[string]any); isMap {
		for k := range m {
			if !strings.HasPrefix(k, "_") {
				nested = true
			}
		}
	}
	if targets, ok := r.g.m2o[coll][field]; ok {
		if !nested {
			return // operators on the field itself (a many-to-one compares its key)
		}
		for _, t := range targets {
			if t == anyCollection {
				r.all = true
				return
			}
			if only == "" || t == only {
				related(t)
			}
		}
		return
	}
	kind, ok := r.g.fields[coll][field]
	if !ok || kind == fieldAlias || nested {
		r.all = true
	}
}

// deepKeys are the nested query keys of a deep object whose effect reach
// understands.
var deepKeys = map[string]bool{"_filter": true, "_sort": true, "_limit": true, "_offset": true, "_page": true, "_search": true}

// deep follows a deep object: its keys are relations, their values nested
// queries (_filter, _sort...) of the related collection.
func (r *reacher) deep(coll string, v any, depth int) {
	if v == nil || r.all {
		return
	}
	m, ok := v.(map[string]any)
	if !ok || depth > maxReachDepth || !r.g.known[coll] {
		r.all = true
		return
	}
	for k, sub := range m {
		if strings.HasPrefix(k, "_") {
			if depth == 0 || !deepKeys[k] {
				r.all = true // _alias, _aggregate… under deep, or a stray operator
				return
			}
			continue
		}
		field, only, _ := strings.Cut(r.resolve(coll, k), ":")
		var targets []string
		if many, ok := r.g.o2m[coll][field]; ok {
			targets = []string{many}
		} else if ts, ok := r.g.m2o[coll][field]; ok {
			for _, t := range ts {
				if t == anyCollection {
					r.all = true
					return
				}
				if only == "" || t == only {
					targets = append(targets, t)
				}
			}
		} else {
			r.all = true // deep into something that is not a visible relation
			return
		}
		nested, isMap := sub.(map[string]any)
		if !isMap {
			r.all = true
			return
		}
		for _, t := range targets {
			r.touched[t] = true
			r.filter(t, nested["_filter"], depth+1)
			r.paths(t, nested["_sort"])
			r.deep(t, nested, depth+1)
		}
	}
}
