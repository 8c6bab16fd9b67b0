package handlers

import (
	"github.com/labstack/echo/v4"

	"github.com/directus-ws-broker/directus-ws-broker/config"
)

// ipExtractor says whose address a request is, for the bounds per address.
// echo's default believes X-Forwarded-For from anyone, so a client could
// pick any address; here the header counts only when the peer is one of
// trusted_proxies (and then only the hops those proxies added).
func ipExtractor(trusted []string) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		if n, err := config.ParseTrusted(p); err == nil { // Validate refused the others
			opts = append(opts, echo.TrustIPRange(n))
		}
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}
