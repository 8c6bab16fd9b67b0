// Package graphql is Directus's GraphQL subscriptions (the
// graphql-transport-ws protocol of the graphql-ws library, served by
// Directus at WEBSOCKETS_GRAPHQL_PATH): documents parsed and validated
// against a schema of what the token may read, each <collection>_mutated
// subscription turned into the session's subscribe with the selection's
// fields as the read's query, and events shaped by the selection set.
//
// Issue 23, in progress: schema.go and document.go are the document layer
// (schema, validation, selection → Directus fields, result shaping),
// codec.go and encoder.go the graphql-transport-ws codec over the session's
// operations. Not yet: the SchemaSource of a real token (what its policies
// may read, from the model), the endpoint in the server and its config,
// the subprotocol in the upgrade, and the tests against Directus's own
// /graphql with the graphql-ws client.
package graphql

import (
	"fmt"
	"sort"
	"strings"

	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// Collection is what a token may read of one collection: the schema's
// object type of that name.
type Collection struct {
	Name   string
	Fields []Field
}

// Field is one readable field. Related names the collection a relational
// field leads to (List: a one-to-many or many-to-many, a list of them);
// Type is the GraphQL scalar of a plain field.
type Field struct {
	Name    string
	Type    string // String, Int, Float, Boolean, ID, JSON, Date, ...
	Related string
	List    bool
}

// Schema is a token's subscription schema.
type Schema struct {
	ast *ast.Schema
	// relations[collection][field] is the collection a relational field
	// leads to: its selection is a relational path of the read's fields.
	relations map[string]map[string]string
}

// scalars are the custom scalars Directus declares beside the built-in
// ones.
var scalars = []string{"JSON", "Date", "Hash", "GraphQLBigInt", "GraphQLStringOrFloat", "GraphQLGeoJSON", "Void"}

// NewSchema builds the schema of collections: a Subscription field
// <name>_mutated(event: EventEnum) of type <name>_mutated { key, event,
// data: <name> } per collection, as Directus's does.
func NewSchema(collections []Collection) (*Schema, error) {
	var b strings.Builder
	for _, s := range scalars {
		fmt.Fprintf(&b, "scalar %s\n", s)
	}
	b.WriteString("enum EventEnum { create update delete }\n")
	known := map[string]bool{}
	var sorted []Collection
	for _, c := range collections {
		if name(c.Name) {
			known[c.Name] = true
			sorted = append(sorted, c)
		}
	}
	rel := map[string]map[string]string{}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	b.WriteString("type Query { _empty: Void }\n")
	b.WriteString("type Subscription {\n")
	for _, c := range sorted {
		fmt.Fprintf(&b, "  %s_mutated(event: EventEnum): %s_mutated\n", c.Name, c.Name)
	}
	if len(sorted) == 0 {
		b.WriteString("  _empty: Void\n") // nothing readable: every _mutated field is unknown
	}
	b.WriteString("}\n")
	for _, c := range sorted {
		fmt.Fprintf(&b, "type %s_mutated { key: ID! event: EventEnum data: %s }\n", c.Name, c.Name)
		fmt.Fprintf(&b, "type %s {\n", c.Name)
		n := 0
		for _, f := range c.Fields {
			if !name(f.Name) {
				continue // not a GraphQL name: not in Directus's schema either
			}
			typ := f.Type
			if f.Related != "" {
				if !known[f.Related] {
					continue // a relation into a collection the token may not read: Directus leaves it out
				}
				if rel[c.Name] == nil {
					rel[c.Name] = map[string]string{}
				}
				rel[c.Name][f.Name] = f.Related
				typ = f.Related
				if f.List {
					typ = "[" + typ + "]"
				}
			}
			if typ == "" {
				typ = "String"
			}
			fmt.Fprintf(&b, "  %s: %s\n", f.Name, typ)
			n++
		}
		if n == 0 {
			b.WriteString("  _empty: Void\n") // GraphQL types need a field
		}
		b.WriteString("}\n")
	}
	s, err := gqlparser.LoadSchema(&ast.Source{Name: "directus", Input: b.String()})
	if err != nil {
		return nil, fmt.Errorf("graphql schema: %w", err)
	}
	return &Schema{ast: s, relations: rel}, nil
}

// name reports whether s is a GraphQL name (/[_A-Za-z][_0-9A-Za-z]*/) and
// not reserved (__…).
func name(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") {
		return false
	}
	for i, r := range s {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}
