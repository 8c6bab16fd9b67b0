package directus

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// A reconnect storm of users whose tokens only Directus can check (static
// tokens, session JWTs, or every token without directus_secret) would be
// one GET /users/me per user at once: past Directus's capacity its own API
// slows down for everyone, and clients answered "busy, retry" at once come
// back at once, which makes it worse. So token checks are admitted at a
// bounded rate, in order of arrival: a check whose turn comes within
// token_check_wait waits for it; a later one is answered 503 with
// Retry-After at its turn, and its turn is kept for its token, so a client
// that comes back when told is admitted at once instead of queueing again.

// maxTickets bounds the turns kept for clients told to come back.
const maxTickets = 100000

type admission struct {
	lim     *rate.Limiter
	maxWait time.Duration
	now     func() time.Time

	mu      sync.Mutex
	tickets map[string]time.Time // token → its turn
}

func newAdmission(perSecond float64, maxWait time.Duration) *admission {
	burst := max(1, int(math.Ceil(perSecond)))
	return &admission{lim: rate.NewLimiter(rate.Limit(perSecond), burst), maxWait: maxWait, now: time.Now, tickets: map[string]time.Time{}}
}

// BusyError is a refusal with the time to come back after.
type BusyError struct {
	Err        *Error
	RetryAfter time.Duration
}

func (e *BusyError) Error() string { return e.Err.Error() }
func (e *BusyError) Unwrap() error { return e.Err }

// RetryAfterSeconds is the Retry-After header's value.
func (e *BusyError) RetryAfterSeconds() string {
	return strconv.Itoa(max(1, int(math.Ceil(e.RetryAfter.Seconds()))))
}

// ErrTokenChecksBusy is the error of a check told to come back later.
var ErrTokenChecksBusy = &Error{Status: http.StatusServiceUnavailable, Code: "SERVICE_BUSY",
	Message: "token checks are admitted at token_check_rate; retry after the time given"}

// admit returns once token's check may go to Directus, or a *BusyError
// naming when it may.
func (a *admission) admit(ctx context.Context, token string) error {
	now := a.now()
	a.mu.Lock()
	at, ok := a.tickets[token]
	if ok {
		delete(a.tickets, token)
	} else {
		at = now.Add(a.lim.ReserveN(now, 1).DelayFrom(now))
	}
	wait := at.Sub(now)
	if wait > a.maxWait {
		if len(a.tickets) >= maxTickets {
			for t, turn := range a.tickets {
				if turn.Before(now) {
					delete(a.tickets, t)
				}
			}
		}
		if len(a.tickets) < maxTickets {
			a.tickets[token] = at
		}
		a.mu.Unlock()
		return &BusyError{Err: ErrTokenChecksBusy, RetryAfter: wait}
	}
	a.mu.Unlock()
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// AdmitChecks admits the token checks made with Directus at perSecond
// (0: as they come), each waiting at most maxWait for its turn; set it
// before use.
func (a *Authenticator) AdmitChecks(perSecond float64, maxWait time.Duration) {
	if perSecond > 0 {
		a.admission = newAdmission(perSecond, maxWait)
	}
}
