package graphql

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// A token's schema is Directus's own: GET /server/specs/graphql/items with
// the token prints the schema Directus's /graphql serves it, built from
// what its policies may read (fetchAllowedFieldMap), with Directus's types,
// relations and names. The broker does not rebuild that schema from the
// permission model: the service user the README recommends cannot read
// the fields of collections it has no read on, and a rebuilt schema would
// drift from Directus's at every release.
//
// Printing a schema costs Directus a schema generation per role and user;
// most tokens share one. GET /permissions/me (cheap) is the fingerprint:
// the schema is a function of the global schema and the fields each action
// may touch, which is what /permissions/me lists, so tokens whose answers
// are equal share the schema printed for the first of them. A schema only
// validates documents: the items themselves are read with each
// subscriber's own token, so a fingerprint collision could at worst change
// a validation error, never what a subscriber receives.

// Source is the SchemaSource of real tokens.
type Source struct {
	Client *directus.Client
	// Generation, when set, is the access model's generation: a
	// permission change it sees ends every cached schema.
	Generation func() uint64
	// TTL bounds how long a token's fingerprint and a schema are reused.
	TTL time.Duration

	mu      sync.Mutex
	tokens  map[string]stamp           // token → fingerprint
	schemas map[[32]byte]*cachedSchema // fingerprint → schema
	loading map[[32]byte]*cachedSchema // fingerprints being printed
}

type stamp struct {
	fp  [32]byte
	gen uint64
	at  time.Time
}

type cachedSchema struct {
	done   chan struct{}
	schema *Schema
	err    error
	gen    uint64
	at     time.Time
}

// maxCached bounds the tokens and schemas kept.
const maxCached = 4096

// publicFingerprint stands for the public role (no token): /permissions/me
// refuses it, and its schema is printed without a token.
var publicFingerprint = sha256.Sum256([]byte("\x00public"))

// Schema implements SchemaSource.
func (s *Source) Schema(ctx context.Context, token string) (*Schema, error) {
	gen := uint64(0)
	if s.Generation != nil {
		gen = s.Generation()
	}
	fp, err := s.fingerprint(ctx, token, gen)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	c, ok := s.schemas[fp]
	if ok && c.gen == gen && time.Since(c.at) < s.TTL {
		s.mu.Unlock()
		return c.schema, nil
	}
	if l, ok := s.loading[fp]; ok {
		s.mu.Unlock()
		return l.wait(ctx)
	}
	l := &cachedSchema{done: make(chan struct{}), gen: gen}
	if s.loading == nil {
		s.loading = map[[32]byte]*cachedSchema{}
	}
	s.loading[fp] = l
	s.mu.Unlock()

	// Others may wait on this print: a subscriber that leaves does not
	// cancel it (the client's timeout bounds it).
	l.schema, l.err = s.print(context.WithoutCancel(ctx), token)
	l.at = time.Now()
	s.mu.Lock()
	delete(s.loading, fp)
	if l.err == nil {
		if s.schemas == nil || len(s.schemas) >= maxCached {
			s.schemas = map[[32]byte]*cachedSchema{}
		}
		s.schemas[fp] = l
	}
	s.mu.Unlock()
	close(l.done)
	return l.schema, l.err
}

func (c *cachedSchema) wait(ctx context.Context) (*Schema, error) {
	select {
	case <-c.done:
		return c.schema, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fingerprint is the hash of the token's GET /permissions/me answer.
func (s *Source) fingerprint(ctx context.Context, token string, gen uint64) ([32]byte, error) {
	if token == "" {
		return publicFingerprint, nil
	}
	s.mu.Lock()
	st, ok := s.tokens[token]
	s.mu.Unlock()
	if ok && st.gen == gen && time.Since(st.at) < s.TTL {
		return st.fp, nil
	}
	raw, err := s.Client.DoRaw(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"permissions", "me"}, Token: token, Kind: "schema"})
	if err != nil {
		return [32]byte{}, err
	}
	fp := sha256.Sum256(raw)
	s.mu.Lock()
	if s.tokens == nil || len(s.tokens) >= maxCached {
		s.tokens = map[string]stamp{}
	}
	s.tokens[token] = stamp{fp: fp, gen: gen, at: time.Now()}
	s.mu.Unlock()
	return fp, nil
}

// print reads the token's schema as Directus prints it.
func (s *Source) print(ctx context.Context, token string) (*Schema, error) {
	sdl, err := s.Client.DoRaw(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"server", "specs", "graphql", "items"}, Token: token, Kind: "schema"})
	if err != nil {
		var de *directus.Error
		if errors.As(err, &de) && de.Status == http.StatusNotFound {
			// GRAPHQL_INTROSPECTION=false removes the route: say so
			// rather than a bare 404.
			return nil, &directus.Error{Status: http.StatusServiceUnavailable, Code: "SERVICE_UNAVAILABLE",
				Message: "GraphQL subscriptions need Directus's schema of the token (GET /server/specs/graphql/items), which Directus refused (is GRAPHQL_INTROSPECTION off?)"}
		}
		return nil, err
	}
	return LoadSchema(string(sdl))
}
