package handlers

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/session"
)

// webhook takes item events posted by a Directus Flow or webhook and
// publishes them. Answers: 202 {"accepted":n}; 400 malformed JSON; 401 bad
// secret; 413 body too large; 422 JSON that is not an item event; 503 when
// the bus cannot take the events (the Flow then logs a failure).
func (s *Server) webhook(c echo.Context) error {
	s.hookMu.RLock()
	if s.closing.Load() {
		s.hookMu.RUnlock()
		// Not on this connection again: it is about to be closed.
		c.Response().Header().Set(echo.HeaderConnection, "close")
		return c.JSON(http.StatusServiceUnavailable, errorBody(&session.Error{Status: 503, Code: "SHUTTING_DOWN", Message: "the broker is shutting down; nothing was published"}))
	}
	s.hooks.Add(1)
	s.hookMu.RUnlock()
	defer s.hooks.Done()
	r := c.Request()
	if !s.webhookAuthorized(r) {
		msg := "missing or wrong webhook secret"
		if s.cfg.WebhookSecret == "" {
			msg = "the broker has no webhook_secret (webhook_insecure_loopback accepts a Flow on this host only)"
		}
		s.log.Warn().Str("remote", r.RemoteAddr).Msg("webhook refused: " + msg)
		return c.JSON(http.StatusUnauthorized, errorBody(&session.Error{Status: 401, Code: "UNAUTHORIZED", Message: msg}))
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, s.cfg.WebhookMaxBody+1))
	if err != nil {
		return c.JSON(http.StatusBadRequest, errorBody(session.Invalid("could not read the body")))
	}
	if int64(len(body)) > s.cfg.WebhookMaxBody {
		return c.JSON(http.StatusRequestEntityTooLarge, errorBody(&session.Error{Status: 413, Code: "PAYLOAD_TOO_LARGE", Message: "body exceeds webhook_max_body"}))
	}
	events, err := directus.NormalizeWebhook(body)
	var notEvent *directus.NotEventError
	switch {
	case errors.Is(err, directus.ErrMalformed):
		return c.JSON(http.StatusBadRequest, errorBody(session.Invalid("body is not valid JSON")))
	case errors.As(err, &notEvent):
		return c.JSON(http.StatusUnprocessableEntity, errorBody(&session.Error{Status: 422, Code: "NOT_AN_ITEM_EVENT", Message: notEvent.Reason}))
	case err != nil:
		return err
	}
	now := time.Now()
	for i := range events {
		events[i].Received = now
	}
	if err := s.broker.Publish(r.Context(), events); err != nil {
		if errors.Is(err, broker.ErrInvalidEvent) {
			return c.JSON(http.StatusUnprocessableEntity, errorBody(&session.Error{Status: 422, Code: "NOT_AN_ITEM_EVENT", Message: err.Error()}))
		}
		// Bus trouble (Redis down) or the sender gave up: nothing internal
		// goes into the answer; the Flow logs the 503.
		s.log.Error().Err(err).Int("events", len(events)).Msg("webhook events not published")
		return c.JSON(http.StatusServiceUnavailable, errorBody(&session.Error{Status: 503, Code: "SERVICE_UNAVAILABLE", Message: "events could not be published; retry"}))
	}
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID
	}
	// At debug level, when each event arrived (with the dispatch's
	// "delivered" lines: the broker's share of a write's latency).
	if ev := s.log.Debug(); ev.Enabled() {
		for _, e := range events {
			s.log.Debug().Str("event", e.ID).Str("collection", e.Collection).Strs("keys", e.Keys).Int64("received_us", now.UnixMicro()).Msg("event received")
		}
	}
	return c.JSON(http.StatusAccepted, map[string]any{"accepted": len(events), "ids": ids})
}

// webhookAuthorized checks the shared secret in constant time, or, with no
// secret configured, that the sender is on this host.
func (s *Server) webhookAuthorized(r *http.Request) bool {
	if s.cfg.WebhookSecret == "" {
		return s.cfg.WebhookInsecureLoopback && loopbackFlow(r)
	}
	got := r.Header.Get(s.cfg.WebhookSecretHeader)
	if got == "" {
		if auth := r.Header.Get("Authorization"); len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
			got = auth[7:]
		}
	}
	// Hashing first makes the comparison's time independent of lengths.
	a := sha256.Sum256([]byte(got))
	b := sha256.Sum256([]byte(s.cfg.WebhookSecret))
	return got != "" && subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// countWebhook counts the webhook's answers by status.
func (s *Server) countWebhook(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		status := c.Response().Status
		var he *echo.HTTPError
		if errors.As(err, &he) {
			status = he.Code
		} else if err != nil {
			status = http.StatusInternalServerError
		}
		count(&s.webhookAnswers, status)
		return err
	}
}

// proxyHeaders are the headers a reverse proxy or CDN adds: a request
// relayed by a proxy on this host looks local, so one carrying any of them
// is not trusted without a secret.
var proxyHeaders = []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip", "Via", "True-Client-Ip", "Cf-Connecting-Ip",
	"X-Client-Ip", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Cluster-Client-Ip", "Fastly-Client-Ip", "X-Original-Forwarded-For"}

// loopbackFlow reports whether r can only be a Directus Flow on this host
// (webhook_insecure_loopback, no secret): from a loopback address, to a
// loopback Host (a page using DNS rebinding sends its own name), not
// relayed by a proxy, and not shaped like a browser's request (a page on
// this host can POST text/plain without a preflight, and a browser always
// sends Origin or Sec-Fetch-* with it). A Flow posts application/json with
// none of these.
func loopbackFlow(r *http.Request) bool {
	for _, h := range proxyHeaders {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	if r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Mode") != "" || r.Header.Get("Sec-Fetch-Site") != "" || r.Header.Get("Cookie") != "" {
		return false
	}
	if mt, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); !strings.EqualFold(strings.TrimSpace(mt), "application/json") {
		return false
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if !loopbackName(host) {
		return false
	}
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	ip := net.ParseIP(remote)
	return ip != nil && ip.IsLoopback()
}

func loopbackName(host string) bool {
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
