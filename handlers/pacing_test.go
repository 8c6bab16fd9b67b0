package handlers_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestTokenChecksPaced: issue 22.2 on Directus 11.17.4. Token checks that
// need Directus are admitted at token_check_rate: with 5/s and no wait,
// eight users with static tokens connecting at once are five admitted and
// three answered 503 with Retry-After at their turn; each comes back when
// told and is admitted, its turn kept for its token.
func TestTokenChecksPaced(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.TokenCheckRate, cfg.TokenCheckWait = 5, 0
	w := newWorld(t, "pace")
	role := w.role("readers")
	p := w.policy("read all")
	w.read(p, nil, nil)
	w.attachRole(role, p)
	var tokens []string
	for i := range 8 {
		_, tok := w.user(fmt.Sprint("u", i), role)
		tokens = append(tokens, tok)
	}
	b := brokertest.Start(t, cfg)
	type answer struct {
		i     int
		c     *brokertest.Client
		retry int
	}
	answers := make(chan answer, len(tokens))
	for i, tok := range tokens {
		go func() {
			c, resp, err := brokertest.DialE(b.WSURL, tok, nil)
			if err == nil {
				answers <- answer{i: i, c: c}
				return
			}
			retry := -1
			if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
				retry, _ = strconv.Atoi(resp.Header.Get("Retry-After"))
			}
			answers <- answer{i: i, retry: retry}
		}()
	}
	var told []answer
	admitted := 0
	for range tokens {
		a := <-answers
		switch {
		case a.c != nil:
			admitted++
			a.c.Conn.Close()
		case a.retry >= 1:
			told = append(told, a)
		default:
			t.Fatalf("user %d: refused without Retry-After", a.i)
		}
	}
	if admitted != 5 || len(told) != 3 {
		t.Fatalf("%d admitted and %d told to come back, want 5 and 3 (burst 5)", admitted, len(told))
	}
	for _, a := range told {
		time.Sleep(time.Duration(a.retry) * time.Second) // a client doing as told, not a synchronization
		c, resp, err := brokertest.DialE(b.WSURL, tokens[a.i], nil)
		if err != nil {
			t.Fatalf("user %d came back after %d s as told: %v %v", a.i, a.retry, err, resp)
		}
		c.Conn.Close()
	}
}
