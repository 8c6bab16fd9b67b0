package directus

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Identity is what Directus said about a token.
type Identity struct {
	UserID string
	// Expires is when a JWT stops being valid; zero for static tokens.
	Expires time.Time
}

// Authenticator validates tokens with Directus (GET /users/me), caching
// answers briefly so a reconnect storm of one user costs one call.
type Authenticator struct {
	client *Client
	ttl    time.Duration
	now    func() time.Time

	mu    sync.Mutex
	cache map[string]cachedIdentity
}

type cachedIdentity struct {
	id Identity
	at time.Time
}

// NewAuthenticator caches valid tokens for ttl (0 disables the cache).
func NewAuthenticator(c *Client, ttl time.Duration) *Authenticator {
	return &Authenticator{client: c, ttl: ttl, now: time.Now, cache: map[string]cachedIdentity{}}
}

// Validate returns the token's identity, an *Error with status 401 for a
// token Directus refuses, or an error for which Unavailable is true.
func (a *Authenticator) Validate(ctx context.Context, token string) (Identity, error) {
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[token]
	a.mu.Unlock()
	if ok && now.Sub(c.at) < a.ttl && (c.id.Expires.IsZero() || now.Before(c.id.Expires)) {
		return c.id, nil
	}
	data, err := a.client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"users", "me"},
		Query: map[string][]string{"fields": {"id"}}, Token: token})
	if err != nil {
		return Identity{}, err
	}
	var me struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(data, &me)
	id := Identity{UserID: me.ID, Expires: JWTExpiry(token)}
	if a.ttl > 0 {
		a.mu.Lock()
		if len(a.cache) > 10000 {
			clear(a.cache)
		}
		a.cache[token] = cachedIdentity{id: id, at: now}
		a.mu.Unlock()
	}
	return id, nil
}

// JWTExpiry reads the exp claim of a JWT without verifying it (Directus
// already did). Static tokens, which are not JWTs, give the zero time.
func JWTExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == 0 {
		return time.Time{}
	}
	return time.Unix(int64(claims.Exp), 0)
}
