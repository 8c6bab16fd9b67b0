package graphql

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/validator"
	"github.com/vektah/gqlparser/v2/validator/rules"
)

// Subscription is the one subscription of a subscribe document: which
// collection and events, the fields its read needs and how its results
// are shaped.
type Subscription struct {
	// Collection's events of Event ("" every event) are sent.
	Collection string
	Event      string
	// Fields is the read's fields query (relational paths dotted) for the
	// selection of data; empty when data is not selected (no read).
	Fields []string

	key  string // the root field's response key (alias or name)
	root []*ast.Field
	vars map[string]any
	doc  *ast.QueryDocument
	s    *Schema

	last lastResults // the results of the last delivery (encoder.go)
}

// Parse validates a subscribe message's document against the schema (the
// GraphQL errors are the message's error payload) and returns its
// subscription. Equal documents (with equal variables and operation) on
// one schema get the same *Subscription, parsed once: its results are then
// shaped once per event for all of them (see encoder).
func (s *Schema) Parse(query string, variables map[string]any, operationName string) (*Subscription, gqlerror.List) {
	vars, err := json.Marshal(variables) // map keys sorted: a canonical form
	if err != nil {
		return nil, gqlerror.List{gqlerror.Errorf("Variables are not JSON: %s", err)}
	}
	key := internKey{query: query, vars: string(vars), op: operationName}
	s.mu.Lock()
	sub := s.interned[key]
	s.mu.Unlock()
	if sub != nil {
		return sub, nil
	}
	sub, errs := s.parse(query, variables, operationName)
	if len(errs) > 0 {
		return nil, errs
	}
	s.mu.Lock()
	if s.interned == nil || len(s.interned) >= maxInterned {
		s.interned = map[internKey]*Subscription{} // the live ones keep their pointers
	}
	if prev := s.interned[key]; prev != nil {
		sub = prev
	} else {
		s.interned[key] = sub
	}
	s.mu.Unlock()
	return sub, nil
}

type internKey struct{ query, vars, op string }

// maxInterned bounds the distinct documents kept per schema.
const maxInterned = 1024

func (s *Schema) parse(query string, variables map[string]any, operationName string) (*Subscription, gqlerror.List) {
	doc, errs := gqlparser.LoadQueryWithRules(s.ast, query, rules.NewDefaultRules())
	if len(errs) > 0 {
		return nil, errs
	}
	op := doc.Operations.ForName(operationName)
	if op == nil {
		if operationName != "" {
			return nil, gqlerror.List{gqlerror.Errorf("Unknown operation named \"%s\".", operationName)}
		}
		return nil, gqlerror.List{gqlerror.Errorf("Must provide operation name if query contains multiple operations.")}
	}
	if op.Operation != ast.Subscription {
		// Only subscriptions are served here; queries and mutations go
		// to Directus's REST or GraphQL API.
		return nil, gqlerror.List{gqlerror.Errorf("Only subscription operations are supported on this endpoint, got %s.", op.Operation)}
	}
	vars, verr := validator.VariableValues(s.ast, op, variables)
	if verr != nil {
		return nil, asList(verr)
	}
	sub := &Subscription{vars: vars, doc: doc, s: s}
	roots := sub.collect(op.SelectionSet)
	if len(roots) == 0 {
		return nil, gqlerror.List{gqlerror.Errorf("The subscription selects no field.")}
	}
	// SingleFieldSubscriptions (validated) leaves one response key.
	sub.key = responseKey(roots[0])
	sub.root = roots
	name := roots[0].Name
	if name == "__typename" || !strings.HasSuffix(name, "_mutated") {
		return nil, gqlerror.List{gqlerror.Errorf("Subscription field %s is not a collection's _mutated field.", name)}
	}
	sub.Collection = strings.TrimSuffix(name, "_mutated")
	if ev, ok := roots[0].ArgumentMap(vars)["event"].(string); ok {
		sub.Event = ev
	}
	var fields []string
	for _, r := range roots {
		for _, f := range sub.collect(r.SelectionSet) {
			if f.Name == "data" {
				if err := sub.paths(sub.Collection, "", f.SelectionSet, &fields); err != nil {
					return nil, gqlerror.List{err}
				}
			}
		}
	}
	sub.Fields = fields
	return sub, nil
}

// collect is the fields of set that apply (fragments spread, @skip and
// @include applied), in document order.
func (sub *Subscription) collect(set ast.SelectionSet) []*ast.Field {
	var out []*ast.Field
	for _, sel := range set {
		switch x := sel.(type) {
		case *ast.Field:
			if sub.included(x.Directives) {
				out = append(out, x)
			}
		case *ast.InlineFragment:
			if sub.included(x.Directives) {
				out = append(out, sub.collect(x.SelectionSet)...)
			}
		case *ast.FragmentSpread:
			if def := sub.doc.Fragments.ForName(x.Name); def != nil && sub.included(x.Directives) {
				out = append(out, sub.collect(def.SelectionSet)...)
			}
		}
	}
	return out
}

// included applies @skip(if:) and @include(if:).
func (sub *Subscription) included(ds ast.DirectiveList) bool {
	for _, d := range ds {
		v, _ := d.ArgumentMap(sub.vars)["if"].(bool)
		if d.Name == "skip" && v || d.Name == "include" && !v {
			return false
		}
	}
	return true
}

// paths appends the read's fields of a selection on collection: a plain
// field as prefix+name, a relational one as the paths of its selection.
// A selection into an object that is not a collection (a many-to-any's
// union, a <field>_func's functions) is refused: the broker does not turn
// those into a read yet, and a wrong read would answer wrong data.
func (sub *Subscription) paths(collection, prefix string, set ast.SelectionSet, out *[]string) *gqlerror.Error {
	for _, f := range sub.collect(set) {
		if f.Name == "__typename" {
			continue
		}
		if related, ok := sub.s.relations[collection][f.Name]; ok {
			if err := sub.paths(related, prefix+f.Name+".", f.SelectionSet, out); err != nil {
				return err
			}
			continue
		}
		if len(f.SelectionSet) > 0 {
			return gqlerror.ErrorPosf(f.Position, "Field \"%s\" of type \"%s\" is not served by the broker's subscriptions yet (many-to-any and _func fields).", f.Name, f.Definition.Type.String())
		}
		p := prefix + f.Name
		if !contains(*out, p) {
			*out = append(*out, p)
		}
	}
	return nil
}

// Result is the next message's payload for an event: {"data":{key:{...}}}
// with key, event and data as the selection asks (data is the item as the
// read returned it, nil for a delete or an item the token cannot read).
func (sub *Subscription) Result(key any, event string, item map[string]any) json.RawMessage {
	var b bytes.Buffer
	b.WriteString(`{"data":{`)
	writeKey(&b, sub.key)
	b.WriteByte('{')
	n := 0
	for _, r := range sub.root {
		for _, f := range sub.collect(r.SelectionSet) {
			if n > 0 {
				b.WriteByte(',')
			}
			n++
			writeKey(&b, responseKey(f))
			switch f.Name {
			case "__typename":
				writeJSON(&b, sub.Collection+"_mutated")
			case "key":
				writeJSON(&b, idString(key))
			case "event":
				writeJSON(&b, event)
			case "data":
				if item == nil {
					b.WriteString("null")
				} else {
					sub.shape(&b, sub.Collection, f.SelectionSet, item)
				}
			default:
				b.WriteString("null")
			}
		}
	}
	b.WriteString("}}}")
	return b.Bytes()
}

// shape writes item as the selection on collection asks: response keys,
// __typename, nested relations (an object, a list of them or null).
func (sub *Subscription) shape(b *bytes.Buffer, collection string, set ast.SelectionSet, item map[string]any) {
	b.WriteByte('{')
	for i, f := range sub.collect(set) {
		if i > 0 {
			b.WriteByte(',')
		}
		writeKey(b, responseKey(f))
		if f.Name == "__typename" {
			writeJSON(b, collection)
			continue
		}
		v := item[f.Name]
		related, rel := sub.s.relations[collection][f.Name]
		switch x := v.(type) {
		case map[string]any:
			if rel {
				sub.shape(b, related, f.SelectionSet, x)
				continue
			}
		case []any:
			if rel {
				b.WriteByte('[')
				for j, e := range x {
					if j > 0 {
						b.WriteByte(',')
					}
					if m, ok := e.(map[string]any); ok {
						sub.shape(b, related, f.SelectionSet, m)
					} else {
						b.WriteString("null") // a related key the read left bare
					}
				}
				b.WriteByte(']')
				continue
			}
		default:
			if rel && v != nil {
				b.WriteString("null") // a bare key where an object was selected
				continue
			}
		}
		if sub.s.isID(collection, f.Name) && v != nil {
			v = idString(v) // GraphQL's ID serializes as a string
		}
		writeJSON(b, v)
	}
	b.WriteByte('}')
}

// isID reports whether field of collection is of type ID (a primary key).
func (s *Schema) isID(collection, field string) bool {
	def := s.ast.Types[collection]
	if def == nil {
		return false
	}
	f := def.Fields.ForName(field)
	return f != nil && f.Type.Name() == "ID"
}

func responseKey(f *ast.Field) string {
	if f.Alias != "" {
		return f.Alias
	}
	return f.Name
}

// idString is a key as GraphQL's ID serializes it: a string.
func idString(key any) any {
	switch k := key.(type) {
	case nil:
		return nil
	case string:
		return k
	case json.Number:
		return k.String()
	default:
		raw, _ := json.Marshal(k)
		return strings.Trim(string(raw), `"`)
	}
}

func writeKey(b *bytes.Buffer, k string) {
	writeJSON(b, k)
	b.WriteByte(':')
}

func writeJSON(b *bytes.Buffer, v any) {
	raw, err := json.Marshal(v)
	if err != nil {
		raw = []byte("null")
	}
	b.Write(raw)
}

func asList(err error) gqlerror.List {
	if e, ok := err.(*gqlerror.Error); ok {
		return gqlerror.List{e}
	}
	if l, ok := err.(gqlerror.List); ok {
		return l
	}
	return gqlerror.List{gqlerror.Errorf("%s", err.Error())}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
