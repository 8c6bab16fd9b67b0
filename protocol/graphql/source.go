package graphql

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// Directus builds each subscriber's schema from what its policies may read
// (fetchAllowedFieldMap): the collections and fields of its read
// permissions. The broker asks Directus the same with the subscriber's own
// token (GET /permissions/me) and types the fields from the schema the
// access model read. A token /permissions/me refuses (the public role)
// gets a schema without collections: nothing to subscribe to yet.

// Model is the schema the broker's access model read (directus.Permissions).
type Model interface {
	Schema() map[string][]directus.SchemaField
	Generation() uint64
}

// Source is the SchemaSource of real tokens.
type Source struct {
	Client *directus.Client
	Model  Model
	// TTL bounds how long a token's schema is reused (a permission change
	// also ends it: the model's generation).
	TTL time.Duration

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	schema *Schema
	gen    uint64
	at     time.Time
}

// maxCached bounds the schemas kept (one per token in use).
const maxCached = 4096

// Schema implements SchemaSource.
func (s *Source) Schema(ctx context.Context, token string) (*Schema, error) {
	gen := s.Model.Generation()
	s.mu.Lock()
	c, ok := s.cache[token]
	s.mu.Unlock()
	if ok && c.gen == gen && time.Since(c.at) < s.TTL {
		return c.schema, nil
	}
	allowed, err := s.allowed(ctx, token)
	if err != nil {
		return nil, err
	}
	schema, err := NewSchema(collections(s.Model.Schema(), allowed))
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.cache == nil || len(s.cache) >= maxCached {
		s.cache = map[string]cached{}
	}
	s.cache[token] = cached{schema: schema, gen: gen, at: time.Now()}
	s.mu.Unlock()
	return schema, nil
}

// allowed is the token's readable fields by collection ("*": every one).
func (s *Source) allowed(ctx context.Context, token string) (map[string][]string, error) {
	if token == "" {
		return nil, nil
	}
	data, err := s.Client.Do(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"permissions", "me"}, Token: token, Kind: "schema"})
	if err != nil {
		var de *directus.Error
		if errors.As(err, &de) && de.Status == http.StatusForbidden {
			return nil, nil
		}
		return nil, err
	}
	var perms map[string]map[string]struct {
		Access string   `json:"access"`
		Fields []string `json:"fields"`
	}
	if err := json.Unmarshal(data, &perms); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for coll, actions := range perms {
		if r, ok := actions["read"]; ok && r.Access != "" && r.Access != "none" && len(r.Fields) > 0 {
			out[coll] = r.Fields
		}
	}
	return out, nil
}

// collections are the schema's collections the token reads, with the
// fields it may read, typed as Directus's GraphQL schema types them.
// System collections are left out: their events do not reach the broker.
func collections(schema map[string][]directus.SchemaField, allowed map[string][]string) []Collection {
	var out []Collection
	for coll, fields := range allowed {
		if strings.HasPrefix(coll, "directus_") {
			continue
		}
		c := Collection{Name: coll}
		for _, f := range schema[coll] {
			if f.Any || !(slices.Contains(fields, "*") || slices.Contains(fields, f.Name)) {
				continue // a many-to-any is a union in Directus's schema: not yet
			}
			if f.Type == "alias" && f.Related == "" {
				continue // a presentation field: no value
			}
			c.Fields = append(c.Fields, Field{Name: f.Name, Type: graphQLType(f), Related: f.Related, List: f.List})
		}
		if len(c.Fields) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// graphQLType is the scalar Directus's GraphQL schema gives a plain field
// (get-graphql-type.js); the primary key is an ID.
func graphQLType(f directus.SchemaField) string {
	if f.Primary {
		return "ID"
	}
	switch f.Type {
	case "integer":
		return "Int"
	case "bigInteger":
		return "GraphQLBigInt"
	case "float", "decimal":
		return "Float"
	case "boolean":
		return "Boolean"
	case "json":
		return "JSON"
	case "csv":
		return "[String]"
	case "date", "time", "dateTime", "timestamp":
		return "Date"
	case "hash":
		return "Hash"
	case "uuid":
		return "ID"
	case "geometry", "geometry.Point", "geometry.LineString", "geometry.Polygon", "geometry.MultiPoint", "geometry.MultiLineString", "geometry.MultiPolygon":
		return "GraphQLGeoJSON"
	default:
		return "String"
	}
}
