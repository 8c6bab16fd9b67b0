package session

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// Authenticate validates token with Directus and makes it the connection's
// token; token "" switches to the public role without a check. Every
// subscription continues with the new token from the next event on; one
// whose collection the new access may no longer read ends, and the client
// is told with Protocol.Dropped. On error nothing changes.
func (s *Session) Authenticate(ctx context.Context, token string) (directus.Identity, error) {
	ctx = s.onBehalf(ctx)
	var id directus.Identity
	if token != "" {
		var err error
		if id, err = s.deps.Auth.Validate(ctx, token); err != nil {
			s.deps.Failures.add("auth", err)
			return id, err
		}
	}
	if err := s.moveSlot(id.UserID); err != nil {
		return id, err
	}
	cred := credentials(token, id, s.addr)
	s.prepare(ctx, cred)
	s.switchTo(ctx, cred, id.Expires)
	return id, nil
}

// moveSlot makes the session hold a connection slot of user (of its
// address when user is "") instead of the one it holds; on error nothing
// changed.
func (s *Session) moveSlot(user string) error {
	s.mu.Lock()
	old, closed := s.slot, s.closed
	s.mu.Unlock()
	sl := SlotOf(user, s.addr)
	if sl == old || closed {
		return nil
	}
	if err := s.deps.Usage.Connect(sl); err != nil {
		s.deps.Failures.add("auth", err)
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.deps.Usage.Disconnect(sl)
		return nil
	}
	s.slot = sl
	s.mu.Unlock()
	s.deps.Usage.Disconnect(old)
	return nil
}

// switchTo makes cred the connection's credentials and rebinds every
// subscription to them.
func (s *Session) switchTo(ctx context.Context, cred broker.Credentials, expires time.Time) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.gen++
	gen := s.gen
	old := s.cred
	s.cred = cred
	s.expired = false
	s.stopTimersLocked()
	subs := make(map[string]entry, len(s.subs))
	for k, e := range s.subs {
		subs[k] = e
	}
	s.mu.Unlock()
	s.watchExpiry(gen, expires)
	for key, e := range subs {
		s.rebind(ctx, key, e, old, cred)
	}
}

// rebind moves sub from old to cred. When that changes its access class,
// the new access is checked first (a delete reaches subscribers without a
// read, so a subscription the new token may not read must not go on).
func (s *Session) rebind(ctx context.Context, key string, e entry, old, cred broker.Credentials) {
	sub := e.sub
	classes := s.deps.classes()
	if classes.Class(old, sub.Collection, sub.Query) != classes.Class(cred, sub.Collection, sub.Query) {
		// Fail closed: a check that could not be made (Directus unreachable)
		// ends the subscription as a refusal does; the client subscribes
		// again once Directus answers.
		if err := s.check(ctx, cred, sub.Collection, sub.Query, e.item); err != nil {
			s.mu.Lock()
			cur, ok := s.subs[key]
			ok = ok && cur.sub == sub
			if ok {
				delete(s.subs, key)
			}
			s.mu.Unlock()
			if ok {
				s.removed(cur)
			} else {
				s.deps.Broker.Unsubscribe(sub)
			}
			s.conn.Send(s.proto.Dropped(sub, err))
			return
		}
	}
	s.deps.Broker.Rebind(sub, cred)
}

// watchExpiry arms the timer that tells the client its JWT expired.
func (s *Session) watchExpiry(gen uint64, expires time.Time) {
	if expires.IsZero() {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.closed {
		return
	}
	s.expiry = time.AfterFunc(time.Until(expires), func() { s.expire(gen) })
}

// expire tells the client its token no longer works, suspends its
// subscriptions (they are told of each event they miss; nothing is read
// for them) and gives it the protocol's grace to send a new token. gen is
// the token generation it is meant for: a token replaced since is not
// expired by it.
func (s *Session) expire(gen uint64) {
	s.mu.Lock()
	if gen != s.gen || s.expired || s.closed || s.cred.Token == "" {
		s.mu.Unlock()
		return
	}
	s.expired = true
	subs := make([]*broker.Subscription, 0, len(s.subs))
	for _, e := range s.subs {
		subs = append(subs, e.sub)
	}
	s.grace = time.AfterFunc(s.proto.AuthGrace(), func() { s.graceOver(gen) })
	s.mu.Unlock()
	for _, sub := range subs {
		s.deps.Broker.Suspend(sub)
	}
	s.conn.Send(s.proto.TokenExpired())
}

func (s *Session) graceOver(gen uint64) {
	s.mu.Lock()
	still := gen == s.gen && s.expired && !s.closed
	s.mu.Unlock()
	if still {
		s.proto.GraceOver(s)
	}
}

// Expired reports whether the token expired and no new one came yet.
func (s *Session) Expired() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expired
}

// Login exchanges credentials for tokens at Directus (JSON mode): an email
// and password (with an optional otp) at /auth/login, or a refresh token at
// /auth/refresh. It changes nothing: Authenticate with the access token
// does. Logins are made by the broker, so Directus's rate limiter sees the
// broker's address.
func (s *Session) Login(ctx context.Context, email, password, otp, refreshToken *string) (access, refresh string, err error) {
	ctx = s.onBehalf(ctx)
	var body map[string]any
	var path string
	switch {
	case email != nil && password != nil:
		path, body = "login", map[string]any{"email": *email, "password": *password, "mode": "json"}
		if otp != nil {
			body["otp"] = *otp
		}
	case refreshToken != nil:
		path, body = "refresh", map[string]any{"refresh_token": *refreshToken, "mode": "json"}
	default:
		return "", "", ErrNoCredentials
	}
	raw, err := s.deps.REST.DoRaw(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"auth", path}, Body: body, Kind: "auth"})
	if err != nil {
		return "", "", err
	}
	var env struct {
		Data struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		} `json:"data"`
	}
	if json.Unmarshal(raw, &env) != nil || env.Data.AccessToken == "" {
		return "", "", errors.New("login: Directus answered without an access token")
	}
	return env.Data.AccessToken, env.Data.RefreshToken, nil
}

// ErrNoCredentials means an auth frame carried nothing to authenticate with.
var ErrNoCredentials = &Error{Status: http.StatusUnauthorized, Code: "AUTH_FAILED", Message: "no credentials"}
