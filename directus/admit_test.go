package directus

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A storm of token checks at 10/s (burst 10) with a 1 s wait: the burst
// goes at once, the next ten wait for their turns (within the second), and
// the rest are told to come back at their turn, spaced as the rate spaces
// them; a client coming back when told is admitted at once, on the turn
// it was given, ahead of a newcomer.
func TestAdmissionPacesTokenChecks(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	a := newAdmission(10, time.Second)
	a.now = func() time.Time { return clock }
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a check that would wait returns at once with ctx's error
	var waited, busy int
	var last time.Duration
	for i := range 30 {
		err := a.admit(ctx, tokenN(i))
		var be *BusyError
		switch {
		case err == nil:
			if i >= 10 {
				t.Fatalf("check %d admitted at once past the burst", i)
			}
		case errors.Is(err, context.Canceled):
			waited++ // its turn was within the wait
		case errors.As(err, &be):
			busy++
			if be.RetryAfter <= last || be.RetryAfter <= time.Second {
				t.Fatalf("check %d told to come back after %v (the one before: %v)", i, be.RetryAfter, last)
			}
			last = be.RetryAfter
			if !errors.Is(err, ErrTokenChecksBusy) || be.Err.Status != 503 {
				t.Fatalf("check %d: %v", i, err)
			}
		default:
			t.Fatalf("check %d: %v", i, err)
		}
	}
	if waited != 10 || busy != 10 {
		t.Fatalf("%d waited and %d were told to come back, want 10 and 10", waited, busy)
	}
	// Token 29 was told to come back after ~3 s: at that time it is
	// admitted at once, a newcomer then is not.
	if _, kept := a.tickets[tokenN(29)]; !kept {
		t.Fatal("the turn of a check told to come back is not kept")
	}
	clock = clock.Add(last)
	if err := a.admit(context.Background(), tokenN(29)); err != nil {
		t.Fatalf("coming back when told: %v", err)
	}
	if err := a.admit(ctx, "newcomer"); err == nil {
		t.Fatal("a newcomer took a turn before its own")
	}
}

func tokenN(i int) string { return "token-" + string(rune('A'+i)) }
