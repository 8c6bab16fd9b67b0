package directus

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// Each refusal jsonwebtoken's verify (issuer "directus") and Directus's
// verifyAccessJWT make, and what Directus checks itself (a session, a
// share): the verifier answers as Directus would, or leaves the token to
// Directus.
func TestJWTVerifierAsDirectus(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v := NewJWTVerifier("the-secret")
	v.now = func() time.Time { return now }
	other := NewJWTVerifier("another-secret")
	good := func() map[string]any {
		return map[string]any{"id": "u1", "role": "r1", "app_access": true, "admin_access": false,
			"iat": now.Unix() - 10, "exp": now.Unix() + 900, "iss": "directus"}
	}
	with := func(change func(map[string]any)) map[string]any { c := good(); change(c); return c }
	resign := func(token, alg string) string {
		parts := strings.Split(token, ".")
		parts[0] = base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","typ":"JWT"}`))
		return strings.Join(parts, ".")
	}
	cases := []struct {
		name    string
		token   string
		handled bool
		err     error
	}{
		{"valid", v.Sign(good()), true, nil},
		{"another secret", other.Sign(good()), true, ErrInvalidToken},
		{"signature of another header", resign(v.Sign(good()), "HS384"), true, ErrInvalidToken},
		{"alg none", resign(v.Sign(good()), "none"), true, ErrInvalidToken},
		{"no signature", strings.Join(strings.Split(v.Sign(good()), ".")[:2], ".") + ".", true, ErrInvalidToken},
		{"expired", v.Sign(with(func(c map[string]any) { c["exp"] = now.Unix() })), true, ErrJWTExpired},
		{"exp not a number", v.Sign(with(func(c map[string]any) { c["exp"] = "soon" })), true, ErrInvalidToken},
		{"not before", v.Sign(with(func(c map[string]any) { c["nbf"] = now.Unix() + 1 })), true, ErrInvalidToken},
		{"nbf now", v.Sign(with(func(c map[string]any) { c["nbf"] = now.Unix() })), true, nil},
		{"no exp", v.Sign(with(func(c map[string]any) { delete(c, "exp") })), true, nil},
		{"no role claim", v.Sign(with(func(c map[string]any) { delete(c, "role") })), true, ErrInvalidToken},
		{"no app_access", v.Sign(with(func(c map[string]any) { delete(c, "app_access") })), true, ErrInvalidToken},
		{"no admin_access", v.Sign(with(func(c map[string]any) { delete(c, "admin_access") })), true, ErrInvalidToken},
		{"role null", v.Sign(with(func(c map[string]any) { c["role"] = nil })), true, nil},
		{"another issuer: a static token to Directus", v.Sign(with(func(c map[string]any) { c["iss"] = "other" })), false, nil},
		{"session: Directus checks it", v.Sign(with(func(c map[string]any) { c["session"] = "s" })), false, nil},
		{"share: Directus checks it", v.Sign(with(func(c map[string]any) { c["share"] = "sh" })), false, nil},
		{"no user: Directus checks it", v.Sign(with(func(c map[string]any) { delete(c, "id") })), false, nil},
		{"static token", "a-static-token", false, nil},
	}
	for _, c := range cases {
		id, handled, err := v.Verify(c.token)
		if handled != c.handled || !errors.Is(err, c.err) {
			t.Errorf("%s: handled %v err %v, want %v %v", c.name, handled, err, c.handled, c.err)
			continue
		}
		if handled && err == nil && (id.UserID != "u1" || !id.JWT) {
			t.Errorf("%s: identity %+v", c.name, id)
		}
	}
	id, _, _ := v.Verify(v.Sign(good()))
	if id.Role != "r1" || !id.Expires.Equal(now.Add(900*time.Second)) {
		t.Fatalf("identity %+v: the role claim and exp must be kept", id)
	}
}

// HS384 and HS512 tokens verify too (jsonwebtoken allows the three HMACs
// for a string secret).
func TestJWTVerifierHMACs(t *testing.T) {
	v := NewJWTVerifier("s")
	for _, alg := range []string{"HS384", "HS512"} {
		tok := signWith(t, alg, "s", `{"id":"u","role":null,"app_access":false,"admin_access":false,"iss":"directus"}`)
		if _, handled, err := v.Verify(tok); !handled || err != nil {
			t.Errorf("%s: handled %v err %v", alg, handled, err)
		}
	}
}
