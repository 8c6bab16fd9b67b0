package directus_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// TestLocalJWTVerificationAnswersAsDirectus gives the broker's
// authenticator (with directus_secret, proven) and a real Directus 11 and 12
// the same tokens — issued by Directus's login and signed with its SECRET,
// valid and each kind Directus refuses — and compares their answers: a
// token one refuses (401) the other refuses, and the tokens the broker
// verifies itself cost Directus no call. Directus's answer is its answer
// to a read of an item with the token, what a subscriber's reads are.
func TestLocalJWTVerificationAnswersAsDirectus(t *testing.T) {
	for _, version := range []string{"11.17.4", "12.3.1"} {
		t.Run(version, func(t *testing.T) {
			var d *directustest.Instance
			if version == "11.17.4" {
				d = readerDirectus(t)
			} else {
				d = startDirectus(t, version)
			}
			compareJWTAnswers(t, d)
		})
	}
}

func startDirectus(t *testing.T, version string) *directustest.Instance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := directustest.Start(ctx, directustest.Options{Version: version})
	if errors.Is(err, directustest.ErrDisabled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	if err := d.CreateCollection(ctx, "docs", directustest.Field{Name: "title"}, directustest.Field{Name: "status"}, directustest.Field{Name: "secret"}); err != nil {
		t.Fatal(err)
	}
	return d
}

func compareJWTAnswers(t *testing.T, d *directustest.Instance) {
	ctx := t.Context()
	secret, err := d.Secret()
	if err != nil {
		t.Fatal(err)
	}
	// Field lists and filters need a license on 12: a role reading all.
	role, err := d.CreateRoleWithReadPolicy(ctx, "jwt-readers-"+d.Version, "docs", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	live, err := d.CreateUser(ctx, "jwt-live@example.com", "jwt-live-static", role)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := d.CreateUser(ctx, "jwt-gone@example.com", "", role)
	if err != nil {
		t.Fatal(err)
	}
	goneRole, err := d.CreateRoleWithReadPolicy(ctx, "jwt-gone-role-"+d.Version, "docs", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var login struct {
		Data struct {
			AccessToken string `json:"access_token"`
		} `json:"data"`
	}
	if _, err := d.Do(ctx, "", http.MethodPost, "/auth/login", map[string]any{"email": "jwt-live@example.com", "password": directustest.UserPassword}, &login); err != nil {
		t.Fatal(err)
	}
	v := directus.NewJWTVerifier(secret)
	wrong := directus.NewJWTVerifier(secret + "-not")
	now := time.Now().Unix()
	claims := func(user, role string, change func(map[string]any)) map[string]any {
		c := map[string]any{"id": user, "role": role, "app_access": false, "admin_access": false, "iat": now, "exp": now + 600, "iss": "directus"}
		if change != nil {
			change(c)
		}
		return c
	}
	tokens := []struct {
		name  string
		token string
		local bool // verified without Directus
	}{
		{"Directus's own login JWT", login.Data.AccessToken, true},
		{"signed with the SECRET", v.Sign(claims(live, role, nil)), true},
		{"another secret", wrong.Sign(claims(live, role, nil)), true},
		{"expired", v.Sign(claims(live, role, func(c map[string]any) { c["exp"] = now - 1 })), true},
		{"not yet valid", v.Sign(claims(live, role, func(c map[string]any) { c["nbf"] = now + 600 })), true},
		{"no role claim", v.Sign(claims(live, role, func(c map[string]any) { delete(c, "role") })), true},
		{"no admin_access claim", v.Sign(claims(live, role, func(c map[string]any) { delete(c, "admin_access") })), true},
		{"another issuer", v.Sign(claims(live, role, func(c map[string]any) { c["iss"] = "someone" })), false},
		{"a session that does not exist", v.Sign(claims(live, role, func(c map[string]any) { c["session"] = "no-such-session" })), false},
		{"a role that no longer exists", v.Sign(claims(live, goneRole, nil)), true},
		{"a user removed", v.Sign(claims(gone, role, nil)), true},
	}
	if _, err := d.Do(ctx, d.AdminToken, http.MethodDelete, "/users/"+gone, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Do(ctx, d.AdminToken, http.MethodDelete, "/roles/"+goneRole, nil, nil); err != nil {
		t.Fatal(err)
	}

	client, err := directus.NewClient(d.URL, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	client.Observe(func(kind, _ string, _ time.Duration) {
		if kind == "auth" {
			calls.Add(1)
		}
	})
	auth := directus.NewAuthenticator(client, 0, 0)
	if err := auth.ProveSecret(ctx, wrong, "jwt-live-static"); !errors.Is(err, directus.ErrSecretMismatch) || auth.VerifiesLocally() {
		t.Fatalf("a wrong secret: %v (verifying locally: %v)", err, auth.VerifiesLocally())
	}
	if err := auth.ProveSecret(ctx, v, "jwt-live-static"); err != nil || !auth.VerifiesLocally() {
		t.Fatalf("Directus's secret not proven: %v", err)
	}
	for _, tk := range tokens {
		status, derr := d.Do(ctx, tk.token, http.MethodGet, "/items/docs?limit=1", nil, nil)
		directusCode := refusalCode(derr)
		before := calls.Load()
		id, err := auth.Validate(ctx, tk.token)
		brokerCode := refusalCode(err)
		if err != nil && brokerCode == "" {
			t.Fatalf("%s: %v", tk.name, err)
		}
		if brokerCode != directusCode {
			t.Errorf("%s: the broker answers %q (%v); Directus HTTP %d %q", tk.name, brokerCode, err, status, directusCode)
		}
		if asked := calls.Load() > before; asked == tk.local {
			t.Errorf("%s: asked Directus: %v, want %v", tk.name, asked, !tk.local)
		}
		if err == nil && tk.local && id.UserID == "" {
			t.Errorf("%s: no user in %+v", tk.name, id)
		}
		t.Logf("%-32s Directus HTTP %d, broker %v", tk.name, status, err)
	}

	// The secret stops being Directus's (here: the broker is given another
	// one, as after a rotation in Directus): the proof fails, and at the
	// next refresh every JWT in use is checked with Directus again; the
	// ones it refuses are returned, to be suspended.
	if err := auth.ProveSecret(ctx, directus.NewJWTVerifier(secret+"-rotated"), "jwt-live-static"); !errors.Is(err, directus.ErrSecretMismatch) {
		t.Fatalf("proof after the rotation: %v", err)
	}
	w := directus.NewPermissions(client, "jwt-live-static", auth, zerolog.Nop()).Watcher()
	jwtCred := func(token string) broker.Credentials {
		return broker.Credentials{Token: token, Principal: directus.Identity{UserID: live, JWT: true}}
	}
	forged := wrong.Sign(claims(live, role, nil))
	liveCreds := []broker.Credentials{jwtCred(tokens[1].token), jwtCred(forged), {Token: "jwt-live-static", Principal: directus.Identity{UserID: live}}}
	if refused := w.Revalidate(ctx, liveCreds); len(refused) != 1 || refused[0] != forged {
		t.Fatalf("revalidated after the rotation: refused %d tokens, want only the one Directus refuses", len(refused))
	}
	if refused := w.Revalidate(ctx, liveCreds); refused != nil {
		t.Fatal("revalidated again without a new refusal of the secret")
	}
}

// refusalCode is the code of a refusal of the token itself ("" for none:
// accepted, even if the read is forbidden).
func refusalCode(err error) string {
	var code string
	var de *directus.Error
	var se *directustest.StatusError
	switch {
	case errors.As(err, &de):
		code = de.Code
	case errors.As(err, &se):
		var body struct {
			Errors []struct {
				Extensions struct {
					Code string `json:"code"`
				} `json:"extensions"`
			} `json:"errors"`
		}
		if json.Unmarshal([]byte(se.Body), &body) == nil && len(body.Errors) > 0 {
			code = body.Errors[0].Extensions.Code
		}
	}
	switch code {
	case "INVALID_TOKEN", "TOKEN_EXPIRED", "INVALID_CREDENTIALS":
		return code
	}
	return ""
}
