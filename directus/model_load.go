package directus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The model is read with the least-privilege service user, and Directus
// answers such a reader with less than there is, without saying so: a list
// read with limit=-1 is clamped to QUERY_LIMIT_MAX, a row filter on the
// service policy hides rows, and /relations and /fields list only what the
// reader may read. Everything here either proves a list complete or fails
// (and the classes fall back to one per user): an incomplete model is
// never used.

// ErrModelIncomplete is wrapped by load errors for a model the service
// user cannot read completely.
var ErrModelIncomplete = errors.New("access model incomplete")

// modelReads are the system collections the model is read from, with the
// fields it needs: the service user must read every row of each (access
// "full" in /permissions/me) and at least these fields.
var modelReads = map[string][]string{
	"directus_roles":       {"id", "parent"},
	"directus_access":      {"role", "user", "policy"},
	"directus_policies":    {"id", "admin_access", "app_access", "ip_access"},
	"directus_permissions": {"policy", "collection", "action", "permissions"},
	"directus_users":       {"id", "role"},
}

// grant is one collection's read permission of the service user, as
// /permissions/me answers it.
type grant struct {
	Access string   `json:"access"`
	Fields []string `json:"fields"`
}

func (g grant) allFields() bool { return slices.Contains(g.Fields, "*") }

func (g grant) covers(fields []string) bool {
	if g.allFields() {
		return true
	}
	for _, f := range fields {
		if !slices.Contains(g.Fields, f) {
			return false
		}
	}
	return true
}

// loadGrants reads the service user's own read permissions.
func loadGrants(ctx context.Context, c *Client, token string) (map[string]grant, error) {
	data, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"permissions", "me"}, Token: token, Kind: "model"})
	if err != nil {
		return nil, fmt.Errorf("access model: read the service user's permissions: %w", err)
	}
	var perms map[string]map[string]grant
	if err := json.Unmarshal(data, &perms); err != nil {
		return nil, fmt.Errorf("access model: read the service user's permissions: %w", err)
	}
	out := map[string]grant{}
	for coll, actions := range perms {
		if g, ok := actions["read"]; ok && g.Access != "" && g.Access != "none" {
			out[coll] = g
		}
	}
	return out, nil
}

// checkGrants fails unless the service user reads every row and the needed
// fields of each model collection.
func checkGrants(grants map[string]grant) error {
	var bad []string
	for coll, fields := range modelReads {
		g, ok := grants[coll]
		switch {
		case !ok:
			bad = append(bad, coll+" (no read permission)")
		case g.Access != "full":
			bad = append(bad, coll+" (a row filter hides some rows)")
		case !g.covers(fields):
			bad = append(bad, coll+" (needs fields "+strings.Join(fields, ",")+")")
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return fmt.Errorf("%w: the service user cannot read all of %s; run `directus-ws-broker flow install --create-service-token` again",
			ErrModelIncomplete, strings.Join(bad, ", "))
	}
	return nil
}

// listAll reads every row of an items-like system collection, page by
// page: Directus clamps limit=-1 to QUERY_LIMIT_MAX without an error, so
// the rows are counted against meta filter_count and the rest is paged
// (sorted by id, so pages neither overlap nor skip).
func listAll[T any](ctx context.Context, c *Client, token, path string, q url.Values) ([]T, error) {
	var all []T
	page := 0
	for {
		qq := url.Values{}
		for k, v := range q {
			qq[k] = v
		}
		qq.Set("meta", "filter_count")
		qq.Set("sort", "id")
		if page == 0 {
			qq.Set("limit", "-1")
		} else {
			qq.Set("limit", strconv.Itoa(page))
			qq.Set("offset", strconv.Itoa(len(all)))
		}
		raw, err := c.DoRaw(ctx, Request{Method: http.MethodGet, Segments: strings.Split(path, "/"), Query: qq, Token: token, Kind: "model"})
		if err != nil {
			return nil, fmt.Errorf("access model: read %s: %w", path, err)
		}
		var body struct {
			Data []T `json:"data"`
			Meta *struct {
				FilterCount *int `json:"filter_count"`
			} `json:"meta"`
		}
		if err := json.Unmarshal(raw, &body); err != nil {
			return nil, fmt.Errorf("access model: read %s: %w", path, err)
		}
		if body.Meta == nil || body.Meta.FilterCount == nil {
			return nil, fmt.Errorf("%w: read %s: no filter_count to check the rows against", ErrModelIncomplete, path)
		}
		all = append(all, body.Data...)
		total := *body.Meta.FilterCount
		if len(all) >= total {
			return all, nil
		}
		if len(body.Data) == 0 {
			return nil, fmt.Errorf("%w: read %s: %d of %d rows", ErrModelIncomplete, path, len(all), total)
		}
		if page == 0 {
			page = len(body.Data) // the clamp: QUERY_LIMIT_MAX
		}
	}
}

// fieldInfo is what /fields says of one field.
type fieldInfo struct {
	Collection string `json:"collection"`
	Field      string `json:"field"`
	Type       string `json:"type"`
	Meta       *struct {
		Special []string `json:"special"`
	} `json:"meta"`
	Schema *struct {
		ForeignKeyTable *string `json:"foreign_key_table"`
		IsPrimaryKey    bool    `json:"is_primary_key"`
	} `json:"schema"`
}

// relationalSpecial are the field specials of relational fields.
var relationalSpecial = map[string]bool{"m2o": true, "o2m": true, "m2m": true, "m2a": true, "files": true, "file": true, "translations": true}

// kind is what the field's metadata says it is (whether or not its
// relation is visible).
func (f fieldInfo) kind() fieldKind {
	if f.Type == "alias" {
		return fieldAlias // o2m, m2m, m2a, translations (and presentation fields)
	}
	if f.Schema != nil && f.Schema.ForeignKeyTable != nil && *f.Schema.ForeignKeyTable != "" {
		return fieldKey
	}
	if f.Meta != nil {
		for _, s := range f.Meta.Special {
			if relationalSpecial[s] {
				return fieldKey
			}
		}
	}
	return fieldPlain
}

// loadSchema reads relations and fields as the service user sees them,
// and marks the collections whose fields (and so relations from them) it
// sees completely: those it may read with every field ("*"). flow install
// grants it that on every collection with a rule no item matches, so it
// learns the schema without reading any item.
func loadSchema(ctx context.Context, c *Client, token string, grants map[string]grant) (*schemaGraph, error) {
	data, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"relations"}, Token: token, Kind: "model"})
	if err != nil {
		return nil, fmt.Errorf("access model: read relations: %w", err)
	}
	var rels []relationInfo
	if err := json.Unmarshal(data, &rels); err != nil {
		return nil, fmt.Errorf("access model: read relations: %w", err)
	}
	var fields []fieldInfo
	if data, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"fields"}, Token: token, Kind: "model"}); err == nil {
		if err := json.Unmarshal(data, &fields); err != nil {
			return nil, fmt.Errorf("access model: read fields: %w", err)
		}
	} else {
		var de *Error
		if !errors.As(err, &de) || de.Status != http.StatusForbidden {
			return nil, fmt.Errorf("access model: read fields: %w", err)
		}
		// No field visible: no collection's schema is known, and every
		// query's reach is unproven (fail closed).
	}
	return buildSchema(rels, fields, grants), nil
}

// relationInfo is one row of /relations.
type relationInfo struct {
	Collection string  `json:"collection"`
	Field      string  `json:"field"`
	Related    *string `json:"related_collection"`
	Meta       *struct {
		OneField   *string  `json:"one_field"`
		OneAllowed []string `json:"one_allowed_collections"`
	} `json:"meta"`
}

func buildSchema(rels []relationInfo, fields []fieldInfo, grants map[string]grant) *schemaGraph {
	g := &schemaGraph{m2o: map[string]map[string][]string{}, o2m: map[string]map[string]string{},
		fields: map[string]map[string]fieldKind{}, known: map[string]bool{}, pk: map[string]string{}}
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
		if r.Related == nil && len(targets) == 0 {
			// A many-to-any without allowed collections can point anywhere.
			targets = []string{anyCollection}
		}
		g.m2o[r.Collection][r.Field] = targets
		if r.Related != nil && r.Meta != nil && r.Meta.OneField != nil && *r.Meta.OneField != "" {
			if g.o2m[*r.Related] == nil {
				g.o2m[*r.Related] = map[string]string{}
			}
			g.o2m[*r.Related][*r.Meta.OneField] = r.Collection
		}
	}
	for _, f := range fields {
		if g.fields[f.Collection] == nil {
			g.fields[f.Collection] = map[string]fieldKind{}
		}
		g.fields[f.Collection][f.Field] = f.kind()
		if f.Schema != nil && f.Schema.IsPrimaryKey {
			g.pk[f.Collection] = f.Field
		}
	}
	for coll, gr := range grants {
		if gr.allFields() && len(g.fields[coll]) > 0 {
			g.known[coll] = true
		}
	}
	return g
}

// anyCollection stands for "any collection" in a many-to-any's targets.
const anyCollection = "\x00any"
