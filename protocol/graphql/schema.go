// Package graphql is Directus's GraphQL subscriptions (the
// graphql-transport-ws protocol of the graphql-ws library, served by
// Directus at WEBSOCKETS_GRAPHQL_PATH): documents parsed and validated
// against a schema of what the token may read, each <collection>_mutated
// subscription turned into the session's subscribe with the selection's
// fields as the read's query, and events shaped by the selection set.
//
// schema.go and document.go are the document layer (Directus's schema of a
// token, validation, selection → Directus fields, result shaping),
// source.go where a token's schema comes from, codec.go and encoder.go the
// graphql-transport-ws codec over the session's operations.
package graphql

import (
	"fmt"
	"strings"
	"sync"

	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/parser"
	"github.com/vektah/gqlparser/v2/validator"
)

// Schema is a token's subscription schema: the part of Directus's own
// schema for that token that its Subscription type reaches.
type Schema struct {
	ast *ast.Schema
	// relations[collection][field] is the collection a relational field
	// leads to: its selection is a relational path of the read's fields.
	relations map[string]map[string]string

	mu       sync.Mutex
	interned map[internKey]*Subscription // see Parse
}

// LoadSchema reads the schema Directus prints for a token (GET
// /server/specs/graphql/items, graphql-js's printSchema of the schema its
// own /graphql serves that token). Only Subscription and the types it
// reaches are kept: the Query and Mutation types (with their aggregate and
// version types, most of a large schema) are never used here, and a token
// cannot see more through a subset. Collections are the data types of the
// <collection>_mutated fields; a field whose type is one of them is a
// relation.
func LoadSchema(sdl string) (*Schema, error) {
	doc, err := parser.ParseSchema(&ast.Source{Name: "directus", Input: sdl})
	if err != nil {
		return nil, fmt.Errorf("graphql schema: %w", err)
	}
	byName := make(map[string]*ast.Definition, len(doc.Definitions))
	for _, d := range doc.Definitions {
		byName[d.Name] = d
	}
	out := validator.PreludeDocument()
	builtin := map[string]bool{}
	for _, d := range out.Definitions {
		builtin[d.Name] = true
	}
	keep := map[string]bool{}
	var visit func(string)
	visit = func(name string) {
		d := byName[name]
		if keep[name] || builtin[name] || d == nil {
			return
		}
		keep[name] = true
		for _, f := range d.Fields {
			visit(f.Type.Name())
			for _, a := range f.Arguments {
				visit(a.Type.Name())
			}
		}
		for _, t := range d.Types {
			visit(t)
		}
		for _, i := range d.Interfaces {
			visit(i)
		}
	}
	// System collections' events do not reach the broker (the Flow hooks
	// content collections): a directus_*_mutated field would be silence.
	if sub := byName["Subscription"]; sub != nil {
		var kept ast.FieldList
		for _, f := range sub.Fields {
			if !strings.HasPrefix(f.Name, "directus_") {
				kept = append(kept, f)
			}
		}
		sub.Fields = kept
		if len(kept) == 0 {
			delete(byName, "Subscription")
		}
	}
	visit("Subscription")
	for _, d := range doc.Definitions {
		if keep[d.Name] {
			out.Definitions = append(out.Definitions, d)
		}
	}
	// A schema needs a query type; queries are refused before they run.
	out.Definitions = append(out.Definitions, &ast.Definition{Kind: ast.Object, Name: "Query",
		Fields: ast.FieldList{{Name: "_empty", Type: ast.NamedType("Boolean", nil)}}})
	for _, d := range doc.Directives {
		if out.Directives.ForName(d.Name) == nil {
			out.Directives = append(out.Directives, d)
		}
	}
	s, err := validator.ValidateSchemaDocument(out)
	if err != nil {
		return nil, fmt.Errorf("graphql schema: %w", err)
	}
	collections := map[string]bool{}
	if sub := s.Subscription; sub != nil {
		for _, f := range sub.Fields {
			if t := s.Types[f.Type.Name()]; t != nil {
				if data := t.Fields.ForName("data"); data != nil {
					collections[data.Type.Name()] = true
				}
			}
		}
	}
	rel := map[string]map[string]string{}
	for coll := range collections {
		for _, f := range s.Types[coll].Fields {
			if collections[f.Type.Name()] {
				if rel[coll] == nil {
					rel[coll] = map[string]string{}
				}
				rel[coll][f.Name] = f.Type.Name()
			}
		}
	}
	return &Schema{ast: s, relations: rel}, nil
}
