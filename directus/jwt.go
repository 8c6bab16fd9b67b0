package directus

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math"
	"net/http"
	"strings"
	"time"
)

// JWTVerifier verifies Directus access JWTs as Directus does, with its
// SECRET, so a token check costs Directus nothing. It is Directus's
// getAccountabilityForToken for a JWT (utils/jwt.ts, jsonwebtoken's verify
// with issuer "directus"): the signature (HS256, HS384 or HS512 over the
// token's own first two parts, compared with its third as jws does), the
// issuer, nbf and exp (when present, numbers; whole seconds), and the
// claims role, app_access and admin_access present. Directus then reads
// the role tree and the user's policies from its database; the broker's
// classes take them from the model it reads with the service user.
//
// What it does not settle is left to Directus (Verify answers handled =
// false): a JWT with a session claim (Directus checks directus_sessions),
// a share token, and a JWT without a user id.
type JWTVerifier struct {
	secret []byte
	now    func() time.Time
}

// NewJWTVerifier verifies with secret, Directus's SECRET setting.
func NewJWTVerifier(secret string) *JWTVerifier {
	return &JWTVerifier{secret: []byte(secret), now: time.Now}
}

// ErrInvalidToken is Directus's InvalidTokenError (403, as Directus answers
// it); an expired JWT is ErrJWTExpired (TokenExpiredError, 401).
var ErrInvalidToken = &Error{Status: http.StatusForbidden, Code: "INVALID_TOKEN", Message: "Invalid token."}

var jwtHashes = map[string]func() hash.Hash{"HS256": sha256.New, "HS384": sha512.New384, "HS512": sha512.New}

// Verify verifies token. handled is false when the token is not a Directus
// JWT (a static token) or is one Directus must check itself; otherwise
// the identity, or Directus's refusal.
func (v *JWTVerifier) Verify(token string) (id Identity, handled bool, err error) {
	if _, ok := decodeDirectusJWT(token); !ok {
		return Identity{}, false, nil // Directus looks it up as a static token
	}
	parts := strings.Split(token, ".")
	var header struct {
		Alg any `json:"alg"`
	}
	_ = json.Unmarshal(nodeBase64(parts[0]), &header)
	alg, _ := header.Alg.(string)
	newHash, ok := jwtHashes[alg]
	if !ok || parts[2] == "" {
		return Identity{}, true, ErrInvalidToken // invalid algorithm; signature required
	}
	mac := hmac.New(newHash, v.secret)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	want := base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(parts[2])) {
		return Identity{}, true, ErrInvalidToken
	}
	var claims map[string]json.RawMessage
	if json.Unmarshal(nodeBase64(parts[1]), &claims) != nil {
		return Identity{}, true, ErrInvalidToken
	}
	now := math.Floor(float64(v.now().UnixMilli()) / 1000) // jsonwebtoken's clockTimestamp
	if raw, ok := claims["nbf"]; ok {
		nbf, isNum := number(raw)
		if !isNum || nbf > now {
			return Identity{}, true, ErrInvalidToken
		}
	}
	if raw, ok := claims["exp"]; ok {
		exp, isNum := number(raw)
		if !isNum {
			return Identity{}, true, ErrInvalidToken
		}
		if now >= exp {
			return Identity{}, true, ErrJWTExpired
		}
	}
	for _, c := range []string{"role", "app_access", "admin_access"} {
		if _, ok := claims[c]; !ok {
			return Identity{}, true, ErrInvalidToken
		}
	}
	if _, ok := claims["session"]; ok {
		return Identity{}, false, nil // Directus checks the session exists
	}
	if raw, ok := claims["share"]; ok && truthyJSON(raw) {
		return Identity{}, false, nil
	}
	var user string
	if json.Unmarshal(claims["id"], &user) != nil || user == "" {
		return Identity{}, false, nil
	}
	var role *string
	if json.Unmarshal(claims["role"], &role) != nil {
		return Identity{}, false, nil // a role that is neither a string nor null
	}
	id = identityOf(token)
	id.UserID = user
	if raw, ok := claims["exp"]; ok {
		exp, _ := number(raw)
		id.Expires = time.Unix(int64(exp), 0)
	}
	return id, true, nil
}

// number reads a JSON number (typeof === "number").
func number(raw json.RawMessage) (float64, bool) {
	var f float64
	if json.Unmarshal(raw, &f) != nil {
		return 0, false
	}
	return f, true
}

func truthyJSON(raw json.RawMessage) bool {
	var v any
	return json.Unmarshal(raw, &v) == nil && truthy(v)
}

// Sign makes a JWT of claims signed with the verifier's secret (HS256), as
// Directus signs its access tokens: for the secret's proof (ProveSecret)
// and for tests and benchmarks.
func (v *JWTVerifier) Sign(claims map[string]any) string {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body, _ := json.Marshal(claims)
	input := header + "." + base64.RawURLEncoding.EncodeToString(body)
	mac := hmac.New(sha256.New, v.secret)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// ErrSecretMismatch means Directus refused a token signed with the
// configured secret: it is not Directus's SECRET.
var ErrSecretMismatch = errors.New("directus_secret: Directus refused a token signed with it, so it is not Directus's SECRET; tokens are checked by Directus")

// ProveSecret proves v's secret is Directus's before the authenticator
// trusts it: it signs a short-lived token for the service user (its id and
// role, no app or admin access) and asks Directus to accept it. Accepted,
// the authenticator verifies access JWTs with v from then on; refused
// (ErrSecretMismatch), Directus checks every token again. Any other
// failure (Directus unreachable) leaves the state as it was: a proven
// secret stays trusted until Directus refuses it.
func (a *Authenticator) ProveSecret(ctx context.Context, v *JWTVerifier, serviceToken string) error {
	raw, err := a.client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"users", "me"}, Kind: "auth",
		Query: map[string][]string{"fields": {"id,role"}}, Token: serviceToken})
	if err != nil {
		return fmt.Errorf("directus_secret: reading the service user: %w", err)
	}
	var me struct {
		ID   string  `json:"id"`
		Role *string `json:"role"`
	}
	if json.Unmarshal(raw, &me) != nil || me.ID == "" {
		return errors.New("directus_secret: Directus did not name the service user")
	}
	now := v.now().Unix()
	probe := v.Sign(map[string]any{"id": me.ID, "role": me.Role, "app_access": false, "admin_access": false,
		"iat": now, "exp": now + 60, "iss": "directus"})
	_, err = a.client.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"users", "me"}, Kind: "auth",
		Query: map[string][]string{"fields": {"id"}}, Token: probe})
	var de *Error
	switch {
	case err == nil:
		a.local.Store(v)
		return nil
	case errors.As(err, &de) && (de.Code == ErrInvalidToken.Code || de.Status == http.StatusUnauthorized):
		if a.local.Swap(nil) != nil {
			a.distrusted.Store(true)
		}
		return ErrSecretMismatch
	}
	return fmt.Errorf("directus_secret: proving it: %w", err)
}

// VerifiesLocally reports whether access JWTs are verified without
// Directus (a proven secret).
func (a *Authenticator) VerifiesLocally() bool { return a.local.Load() != nil }
