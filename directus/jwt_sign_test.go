package directus

import (
	"crypto/hmac"
	"crypto/sha512"
	"encoding/base64"
	"hash"
	"testing"
)

// signWith signs payload with an HS384 or HS512 key, for the tests.
func signWith(t *testing.T, alg, secret, payload string) string {
	t.Helper()
	h := map[string]func() hash.Hash{"HS384": sha512.New384, "HS512": sha512.New}[alg]
	input := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"`+alg+`"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(payload))
	mac := hmac.New(h, []byte(secret))
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}
