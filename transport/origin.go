package transport

import (
	"net/http"
	"net/url"
	"strings"
)

// RequestToken takes an upgrade request's token from Authorization: Bearer,
// or the access_token or api_token query parameter (browsers cannot set
// headers on a WebSocket).
func RequestToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	q := r.URL.Query()
	if t := q.Get("access_token"); t != "" {
		return t
	}
	return q.Get("api_token")
}

// CheckOrigin accepts requests without an Origin (non-browser clients) and
// browsers whose origin is allowed ("*" allows every origin).
func CheckOrigin(allowed []string, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	return originIn(allowed, origin, true)
}

// OriginListed reports whether the request's Origin is named in allowed (a
// "*" entry does not count): only such origins may use a cookie as the
// credential.
func OriginListed(allowed []string, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	return origin != "" && originIn(allowed, origin, false)
}

func originIn(allowed []string, origin string, star bool) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	for _, a := range allowed {
		if a == "*" {
			if star {
				return true
			}
			continue
		}
		if strings.EqualFold(a, origin) || strings.EqualFold(a, u.Host) {
			return true
		}
	}
	return false
}
