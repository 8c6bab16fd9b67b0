package handlers_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// authChecks is the broker's token checks at Directus so far (the
// requests of kind auth its metrics count).
func authChecks(t *testing.T, b *brokertest.Broker) float64 {
	t.Helper()
	var n float64
	for _, line := range strings.Split(scrape(t, b.URL+"/metrics"), "\n") {
		if strings.HasPrefix(line, "broker_directus_request_seconds_count{") && strings.Contains(line, `kind="auth"`) {
			series := line[:strings.LastIndex(line, " ")]
			n += sample(t, line, series)
		}
	}
	return n
}

// TestDirectusSecretVerifiesJWTsLocally: issue 22.1 on Directus 11.17.4
// with the service user flow install makes. With directus_secret the
// broker proves the secret (one signed token for the service user) and
// then lets users in with access JWTs — Directus's own login token and
// tokens signed with its SECRET — without asking Directus; they share one
// read per event and every frame is the user's own REST read. A JWT
// signed with another secret is refused at the upgrade. With a wrong
// secret the proof fails and Directus checks every token again (fail
// closed: nothing is verified with a secret Directus does not use).
func TestDirectusSecretVerifiesJWTsLocally(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	secret, err := dx.Secret()
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, "jwl")
	role := w.role("readers")
	p := w.policy("read all")
	w.read(p, nil, nil)
	w.attachRole(role, p)
	sign := directus.NewJWTVerifier(secret)
	jwtOf := func(user string) string {
		now := time.Now().Unix()
		return sign.Sign(map[string]any{"id": user, "role": role, "app_access": false, "admin_access": false, "iat": now, "exp": now + 900, "iss": "directus"})
	}
	var tokens []string
	for _, name := range []string{"a", "b", "c"} {
		id, _ := w.user(name, role)
		tokens = append(tokens, jwtOf(id))
	}
	var login struct {
		Data struct {
			AccessToken string `json:"access_token"`
		} `json:"data"`
	}
	if _, err := dx.Do(t.Context(), "", http.MethodPost, "/auth/login", map[string]any{"email": "jwl-a@example.com", "password": "user-password"}, &login); err != nil {
		t.Fatal(err)
	}
	tokens = append(tokens, login.Data.AccessToken)

	cfg.DirectusSecret = secret
	b := brokertest.Start(t, cfg)
	proof := authChecks(t, b) // the service user's /users/me and the signed probe
	m := &matrix{t: t, b: b, w: w}
	for i, tok := range tokens {
		m.subscribe(string(rune('a'+i)), tok)
	}
	if n := authChecks(t, b) - proof; n != 0 {
		t.Fatalf("%v token checks at Directus for %d JWT users, want none", n, len(tokens))
	}
	before := b.Broker.Metrics().Reads
	m.post("create", w.item(map[string]any{"title": "for everyone"}), nil)
	if n := b.Broker.Metrics().Reads - before; n != 1 {
		t.Fatalf("%d reads for 4 JWT users of one role, want 1", n)
	}
	forged := directus.NewJWTVerifier(secret + "-forged")
	now := time.Now().Unix()
	if _, resp, err := brokertest.DialE(b.WSURL, forged.Sign(map[string]any{"id": "x", "role": role, "app_access": true, "admin_access": true, "exp": now + 900, "iss": "directus"}), nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a JWT signed with another secret: %v %v, want 401", err, resp)
	}
	_ = b.Stop()

	// A secret that is not Directus's: every token goes to Directus.
	cfg.DirectusSecret = secret + "-not"
	b = brokertest.Start(t, cfg)
	proof = authChecks(t, b)
	brokertest.Dial(t, b.WSURL, tokens[0])
	if n := authChecks(t, b) - proof; n != 1 {
		t.Fatalf("%v token checks with an unproven secret, want 1 (Directus checks the token)", n)
	}
}
