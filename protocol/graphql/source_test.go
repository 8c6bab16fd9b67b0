package graphql

import (
	"strings"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// A token's schema has the collections and fields its read permissions
// name, typed as Directus types them; system collections, many-to-anys and
// presentation aliases are left out, and a relation into a collection it
// may not read is not a field.
func TestCollectionsFromPermissions(t *testing.T) {
	schema := map[string][]directus.SchemaField{
		"articles": {{Name: "id", Type: "integer", Primary: true}, {Name: "title", Type: "string"}, {Name: "views", Type: "integer"},
			{Name: "secret", Type: "string"}, {Name: "author", Type: "uuid", Related: "authors"}, {Name: "notes", Type: "alias", Related: "notes", List: true},
			{Name: "divider", Type: "alias"}, {Name: "parts", Type: "alias", Any: true}},
		"authors":        {{Name: "id", Type: "uuid", Primary: true}, {Name: "name", Type: "string"}},
		"notes":          {{Name: "id", Type: "integer", Primary: true}},
		"directus_users": {{Name: "id", Type: "uuid", Primary: true}},
	}
	allowed := map[string][]string{"articles": {"id", "title", "views", "author", "notes", "divider", "parts"}, "authors": {"*"}, "directus_users": {"*"}}
	s, err := NewSchema(collections(schema, allowed))
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := s.Parse(`subscription { articles_mutated { data { id title views author { id name } } } }`, nil, ""); len(errs) > 0 {
		t.Fatal(errs)
	}
	for doc, want := range map[string]string{
		`subscription { articles_mutated { data { secret } } }`:       `Cannot query field "secret"`,
		`subscription { articles_mutated { data { notes { id } } } }`: `Cannot query field "notes"`, // notes not readable
		`subscription { articles_mutated { data { parts } } }`:        `Cannot query field "parts"`,
		`subscription { directus_users_mutated { key } }`:             `Cannot query field "directus_users_mutated"`,
		`subscription { articles_mutated { data { views { x } } } }`:  `must not have a selection since type "Int" has no subfields`,
	} {
		if _, errs := s.Parse(doc, nil, ""); len(errs) == 0 || !strings.Contains(errs.Error(), want) {
			t.Errorf("%s: %v, want %q", doc, errs, want)
		}
	}
}
