package graphql

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// testSDL is a schema as Directus 11.17.4 prints it (GET
// /server/specs/graphql/items): articles has an author (a many-to-one into
// authors), comments (a one-to-many), parts (a many-to-any: a union) and
// date_created_func; a relation into a collection the token may not read
// (secret) is not in it, as Directus leaves it out. Query, the aggregate
// types and the printed built-in scalars are there too.
const testSDL = `type Query {
  articles(filter: articles_filter, sort: [String], limit: Int): [articles!]!
  articles_aggregated(groupBy: [String]): [articles_aggregated!]!
}

type Subscription {
  articles_mutated(event: EventEnum): articles_mutated
  authors_mutated(event: EventEnum): authors_mutated
  comments_mutated(event: EventEnum): comments_mutated
  directus_users_mutated(event: EventEnum): directus_users_mutated
}

type directus_users_mutated {
  key: ID!
  event: EventEnum
  data: authors
}

"""The ` + "`Boolean`" + ` scalar type represents ` + "`true` or `false`" + `."""
scalar Boolean

scalar Int

scalar ID

scalar String

scalar Date

enum EventEnum {
  create
  update
  delete
}

type articles {
  id: ID!
  title: String
  views: Int
  date_created: Date
  date_created_func: datetime_functions
  author(filter: authors_filter, sort: [String], limit: Int, offset: Int, page: Int, search: String): authors
  comments(filter: comments_filter, sort: [String], limit: Int, offset: Int, page: Int, search: String): [comments]
  parts: [articles_parts]
}

type articles_aggregated {
  countAll: Int
}

type articles_mutated {
  key: ID!
  event: EventEnum
  data: articles
}

type articles_parts {
  id: ID!
  item: articles_parts_item_union
}

union articles_parts_item_union = authors | comments

type authors {
  id: ID!
  name: String
}

type authors_mutated {
  key: ID!
  event: EventEnum
  data: authors
}

type comments {
  id: ID!
  body: String
  by(filter: authors_filter, sort: [String], limit: Int, offset: Int, page: Int, search: String): authors
}

type comments_mutated {
  key: ID!
  event: EventEnum
  data: comments
}

type datetime_functions {
  year: Int
  month: Int
}

input articles_filter {
  title: string_filter_operators
  _and: [articles_filter]
}

input authors_filter {
  name: string_filter_operators
}

input comments_filter {
  body: string_filter_operators
}

input string_filter_operators {
  _eq: String
}
`

func testSchema(t *testing.T) *Schema {
	t.Helper()
	s, err := LoadSchema(testSDL)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseFields(t *testing.T) {
	s := testSchema(t)
	for _, c := range []struct {
		doc    string
		vars   map[string]any
		coll   string
		event  string
		fields []string
	}{
		{`subscription { articles_mutated(event: create) { key event data { id title author { name } } } }`, nil,
			"articles", "create", []string{"id", "title", "author.name"}},
		{`subscription { articles_mutated { key } }`, nil, "articles", "", nil},
		{`subscription S($e: EventEnum) { a: articles_mutated(event: $e) { data { ...F comments { body by { id name } } } } }
		  fragment F on articles { id ... on articles { views } }`, map[string]any{"e": "update"},
			"articles", "update", []string{"id", "views", "comments.body", "comments.by.id", "comments.by.name"}},
		{`subscription($skip: Boolean!) { articles_mutated { data { id title @skip(if: $skip) views @include(if: false) } } }`, map[string]any{"skip": true},
			"articles", "", []string{"id"}},
		{`subscription { articles_mutated { data { __typename id author { __typename id } } } }`, nil, "articles", "", []string{"id", "author.id"}},
		// Arguments of relational fields validate (Directus's schema has
		// them) and, as in Directus, do not change the read.
		{`subscription { articles_mutated { data { comments(filter: {body: {_eq: "x"}}, limit: 1) { body } } } }`, nil, "articles", "", []string{"comments.body"}},
	} {
		sub, errs := s.Parse(c.doc, c.vars, "")
		if len(errs) > 0 {
			t.Errorf("%s: %v", c.doc, errs)
			continue
		}
		if sub.Collection != c.coll || sub.Event != c.event || !reflect.DeepEqual(sub.Fields, c.fields) {
			t.Errorf("%s: %s %q %q", c.doc, sub.Collection, sub.Event, sub.Fields)
		}
	}
}

func TestParseErrors(t *testing.T) {
	s := testSchema(t)
	for _, c := range []struct{ doc, want string }{
		{`subscription { articles_mutated { data { nope } } }`, `Cannot query field "nope" on type "articles".`},
		{`subscription { secrets_mutated { key } }`, `Cannot query field "secrets_mutated" on type "Subscription".`},
		{`subscription { articles_mutated { data { secret { id } } } }`, `Cannot query field "secret" on type "articles".`},
		{`subscription { articles_mutated(event: created) { key } }`, `Value "created" does not exist in "EventEnum" enum.`},
		{`subscription { articles_mutated { key } authors_mutated { key } }`, `Anonymous Subscription must select only one top level field.`},
		{`subscription { articles_mutated { data { author } } }`, `Field "author" of type "authors" must have a selection of subfields`},
		{`query { _empty }`, `Only subscription operations are supported`},
		// Only what Subscription reaches is kept; system collections'
		// events do not reach the broker.
		{`subscription { directus_users_mutated { key } }`, `Cannot query field "directus_users_mutated" on type "Subscription".`},
		{`query { articles { id } }`, `Cannot query field "articles" on type "Query".`},
		{`subscription { articles_mutated { data { parts { id item { ... on authors { id } } } } } }`, `Field "parts" of type "[articles_parts]" is not served`},
		{`subscription { articles_mutated { data { date_created_func { year } } } }`, `Field "date_created_func" of type "datetime_functions" is not served`},
		{`subscription {`, `Expected Name, found <EOF>`},
		{`subscription($e: EventEnum!) { articles_mutated(event: $e) { key } }`, `must be defined`},
	} {
		_, errs := s.Parse(c.doc, nil, "")
		if len(errs) == 0 || !strings.Contains(errs.Error(), c.want) {
			t.Errorf("%s: errors %v, want %q", c.doc, errs, c.want)
		}
	}
}

func TestResultShape(t *testing.T) {
	s := testSchema(t)
	sub, errs := s.Parse(`subscription { m: articles_mutated { __typename event k: key data { __typename id t: title views author { name } comments { body } } } }`, nil, "")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	item := map[string]any{"id": float64(3), "views": float64(12), "title": "Hello", "author": map[string]any{"name": "Ann", "id": 1}, "comments": []any{map[string]any{"body": "x"}, json.Number("7")}}
	got := string(sub.Result(json.Number("3"), "update", item))
	want := `{"data":{"m":{"__typename":"articles_mutated","event":"update","k":"3","data":{"__typename":"articles","id":"3","t":"Hello","views":12,"author":{"name":"Ann"},"comments":[{"body":"x"},null]}}}}`
	if got != want {
		t.Fatalf("result\n%s\nwant\n%s", got, want)
	}
	// A delete: no data; the key as an ID (a string).
	if got := string(sub.Result(float64(9), "delete", nil)); !strings.Contains(got, `"k":"9","data":null`) {
		t.Fatalf("delete: %s", got)
	}
	// A relation the read left null, or a bare key.
	got = string(sub.Result("a", "create", map[string]any{"title": nil, "author": "u1", "comments": nil}))
	if !strings.Contains(got, `"t":null,"views":null,"author":null,"comments":null`) {
		t.Fatalf("nulls: %s", got)
	}
}

// Equal documents share one parsed subscription (their results are shaped
// once per event); other variables or another document do not.
func TestParseInterns(t *testing.T) {
	s := testSchema(t)
	doc := `subscription($e: EventEnum) { articles_mutated(event: $e) { key data { id } } }`
	a, _ := s.Parse(doc, map[string]any{"e": "create"}, "")
	b, _ := s.Parse(doc, map[string]any{"e": "create"}, "")
	c, _ := s.Parse(doc, map[string]any{"e": "update"}, "")
	d, _ := s.Parse(`subscription { articles_mutated { key } }`, nil, "")
	if a == nil || a != b || a == c || a == d {
		t.Fatalf("interning: a=%p b=%p c=%p d=%p", a, b, c, d)
	}
	if _, errs := s.Parse(doc, map[string]any{"e": "nope"}, ""); len(errs) == 0 {
		t.Fatal("a bad variable parsed")
	}
}
