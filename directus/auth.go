package directus

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Identity is what Directus said about a token, and what its JWT carries.
type Identity struct {
	UserID string
	// Expires is when a JWT stops being valid; zero for static tokens.
	Expires time.Time
	// JWT is set for Directus JWTs (issuer "directus"): Directus then reads
	// with the role the token carries (Role, "" for none), not the user's
	// current role, until it expires. A static token reads with the user's
	// role as the database holds it.
	JWT  bool
	Role string
	// Share is the share a share token was issued for ("" otherwise).
	Share string
	// claim is a role claim read loosely from anything shaped like a JWT
	// (hasClaim): see claimedRole. Read once, here, not per classing.
	claim    string
	hasClaim bool
}

// Authenticator validates tokens with Directus (GET /users/me), caching
// answers briefly so a reconnect storm of one user costs one call.
type Authenticator struct {
	client *Client
	ttl    time.Duration
	// refusedTTL: a token Directus refused is refused again without a call
	// this long (a client retrying a bad token in a loop costs one call).
	refusedTTL time.Duration
	now        func() time.Time

	mu      sync.Mutex
	cache   map[string]cachedIdentity
	refused map[string]refusal
	// flights shares one /users/me among concurrent checks of one token
	// (a user's tabs reconnecting at once).
	flights map[string]*tokenFlight
	// local verifies access JWTs without asking Directus, once its secret
	// was proven to be Directus's (ProveSecret); nil: Directus checks every
	// token.
	local atomic.Pointer[JWTVerifier]
	// admission paces the checks made with Directus (admit.go; nil: none).
	admission *admission
	// distrusted is set when a secret that was trusted is refused by
	// Directus (rotated): the JWTs verified with it must be checked again.
	distrusted atomic.Bool
}

// TakeDistrust reports (once) whether a secret trusted until then was
// refused by Directus since the last call: every JWT in use must then be
// checked with Directus again.
func (a *Authenticator) TakeDistrust() bool { return a.distrusted.Swap(false) }

type tokenFlight struct {
	done chan struct{}
	id   Identity
	err  error
}

type cachedIdentity struct {
	id Identity
	at time.Time
}

type refusal struct {
	err error
	at  time.Time
}

// maxCached bounds each cache; past it, it starts over.
const maxCached = 10000

// NewAuthenticator caches valid tokens for ttl and refused ones for
// refusedTTL (0 disables either cache).
func NewAuthenticator(c *Client, ttl, refusedTTL time.Duration) *Authenticator {
	return &Authenticator{client: c, ttl: ttl, refusedTTL: refusedTTL, now: time.Now,
		cache: map[string]cachedIdentity{}, refused: map[string]refusal{}}
}

// ErrJWTExpired is the refusal of a Directus JWT whose exp has passed; it is
// answered without asking Directus, which refuses such a token too.
var ErrJWTExpired = &Error{Status: http.StatusUnauthorized, Code: "TOKEN_EXPIRED", Message: "Token expired."}

// Validate returns the token's identity, an *Error with status 401 for a
// token Directus refuses, or an error for which Unavailable is true.
func (a *Authenticator) Validate(ctx context.Context, token string) (Identity, error) {
	if v := a.local.Load(); v != nil {
		if id, handled, err := v.Verify(token); handled {
			return id, err
		}
	}
	now := a.now()
	if id := identityOf(token); id.JWT && !id.Expires.IsZero() && !now.Before(id.Expires) {
		return Identity{}, ErrJWTExpired
	}
	a.mu.Lock()
	c, ok := a.cache[token]
	r, refused := a.refused[token]
	a.mu.Unlock()
	if ok && now.Sub(c.at) < a.ttl && (c.id.Expires.IsZero() || now.Before(c.id.Expires)) {
		return c.id, nil
	}
	if refused && now.Sub(r.at) < a.refusedTTL {
		return Identity{}, r.err
	}
	return a.shared(ctx, token, now)
}

// shared makes one fetch for the concurrent callers of one token.
func (a *Authenticator) shared(ctx context.Context, token string, now time.Time) (Identity, error) {
	a.mu.Lock()
	f, ok := a.flights[token]
	if !ok {
		if a.flights == nil {
			a.flights = map[string]*tokenFlight{}
		}
		f = &tokenFlight{done: make(chan struct{})}
		a.flights[token] = f
		a.mu.Unlock()
		if a.admission != nil {
			f.err = a.admission.admit(context.WithoutCancel(ctx), token) // bounded by its maxWait
		}
		if f.err == nil {
			f.id, f.err = a.fetch(context.WithoutCancel(ctx), token, now)
		}
		a.mu.Lock()
		delete(a.flights, token)
		a.mu.Unlock()
		close(f.done)
		return f.id, f.err
	}
	a.mu.Unlock()
	select {
	case <-f.done:
		return f.id, f.err
	case <-ctx.Done():
		return Identity{}, ctx.Err()
	}
}

// Fresh asks Directus again, bypassing the cache (a change of the token's
// user was reported), and caches the answer.
func (a *Authenticator) Fresh(ctx context.Context, token string) (Identity, error) {
	a.mu.Lock()
	delete(a.cache, token)
	a.mu.Unlock()
	return a.fetch(ctx, token, a.now())
}

func (a *Authenticator) fetch(ctx context.Context, token string, now time.Time) (Identity, error) {
	data, err := a.client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"users", "me"}, Kind: "auth",
		Query: map[string][]string{"fields": {"id"}}, Token: token})
	var de *Error
	if err != nil && a.refusedTTL > 0 && errors.As(err, &de) && (de.Status == http.StatusUnauthorized || de.Status == http.StatusForbidden) {
		a.mu.Lock()
		if len(a.refused) >= maxCached {
			clear(a.refused)
		}
		a.refused[token] = refusal{err: err, at: now}
		a.mu.Unlock()
	}
	if err != nil {
		return Identity{}, err
	}
	var me struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(data, &me)
	id := identityOf(token)
	id.UserID = me.ID
	if a.ttl > 0 {
		a.mu.Lock()
		if len(a.cache) >= maxCached {
			clear(a.cache)
		}
		a.cache[token] = cachedIdentity{id: id, at: now}
		delete(a.refused, token)
		a.mu.Unlock()
	}
	return id, nil
}

// identityOf reads what a token carries as Directus reads it, without
// verifying it: it is only used once Directus accepted the token. Directus
// takes a token for a JWT exactly when jsonwebtoken's decode gives a
// payload whose iss is "directus" (isDirectusJWT); it then verifies it, so
// an accepted JWT's claims are Directus's own. Anything else is a static
// token, looked up as a whole: its claims, if it has any, mean nothing.
func identityOf(token string) Identity {
	var id Identity
	id.claim, id.hasClaim = claimedRole(token)
	claims, ok := decodeDirectusJWT(token)
	if !ok {
		return id
	}
	id.JWT = true
	if exp, ok := claims.Exp.(float64); ok && exp != 0 {
		id.Expires = time.Unix(int64(exp), 0)
	}
	if role, ok := claims.Role.(string); ok {
		id.Role = role
	}
	if share, ok := claims.Share.(string); ok {
		id.Share = share
	}
	return id
}

type jwtClaims struct {
	Iss   any `json:"iss"`
	Exp   any `json:"exp"`
	Role  any `json:"role"`
	Share any `json:"share"`
}

// jwsShape is jws's test of a compact JWS (the signature may be empty).
var jwsShape = regexp.MustCompile(`^[a-zA-Z0-9\-_]+?\.[a-zA-Z0-9\-_]+?\.([a-zA-Z0-9\-_]+)?$`)

// decodeDirectusJWT is Directus's isDirectusJWT (jsonwebtoken.decode with
// json: true, then iss === "directus"), step by step: the jws shape, a
// header that is truthy JSON, a payload that is JSON with iss "directus".
func decodeDirectusJWT(token string) (jwtClaims, bool) {
	if !jwsShape.MatchString(token) {
		return jwtClaims{}, false
	}
	parts := strings.Split(token, ".")
	var header any
	if json.Unmarshal(nodeBase64(parts[0]), &header) != nil || !truthy(header) {
		return jwtClaims{}, false
	}
	var claims jwtClaims
	if json.Unmarshal(nodeBase64(parts[1]), &claims) != nil {
		return jwtClaims{}, false
	}
	if iss, _ := claims.Iss.(string); iss != "directus" {
		return jwtClaims{}, false
	}
	return claims, true
}

// claimedRole is the role claim of anything shaped like a JWT whose payload
// decodes, read as loosely as possible: a token whose claim could be read
// one way or another is shared only when that claim agrees with the role
// the database gives its user, so a difference between this broker's and
// Directus's reading of a token can never choose a class.
func claimedRole(token string) (role string, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) < 2 {
		return "", false
	}
	for _, p := range parts[1:] {
		var c struct {
			Role *string `json:"role"`
		}
		if json.Unmarshal(nodeBase64(p), &c) == nil && c.Role != nil {
			return *c.Role, true
		}
	}
	return "", false
}

// nodeBase64 decodes s as Node's Buffer.from(s, "base64") does: either
// alphabet, padding optional, a dangling last character ignored.
func nodeBase64(s string) []byte {
	s = strings.TrimRight(s, "=")
	s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	if len(s)%4 == 1 {
		s = s[:len(s)-1]
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

// truthy is JavaScript's truthiness of a JSON value.
func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case string:
		return x != ""
	default:
		return true
	}
}
