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
	r := c.Request()
	if !s.webhookAuthorized(r) {
		s.log.Warn().Str("remote", r.RemoteAddr).Msg("webhook refused: missing or wrong secret")
		return c.JSON(http.StatusUnauthorized, errorBody(&session.Error{Status: 401, Code: "UNAUTHORIZED", Message: "missing or wrong webhook secret"}))
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
		// A request relayed by a reverse proxy on this host looks local:
		// one that says it was forwarded is not trusted.
		if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" || r.Header.Get("X-Real-Ip") != "" {
			return false
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ip := net.ParseIP(host)
		return ip != nil && ip.IsLoopback()
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
		add(&s.stats.webhook, status)
		return err
	}
}
