package redisbus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/directus-ws-broker/directus-ws-broker/internal/redistest"
)

// The rendezvous choice: every order of the same holders gives the same
// reader, and a holder leaving moves only the groups it won.
func TestRendezvous(t *testing.T) {
	ids := []string{"a", "b", "c"}
	won := map[string]int{}
	for i := range 3000 {
		g := fmt.Sprint("group-", i)
		r := rendezvous(g, ids)
		if r != rendezvous(g, []string{"c", "a", "b"}) {
			t.Fatalf("%s: the order of the holders changed the reader", g)
		}
		won[r]++
		if rest := rendezvous(g, []string{"a", "c"}); r != "b" && rest != r {
			t.Fatalf("%s: b left and the reader moved from %s to %s", g, r, rest)
		}
	}
	for _, id := range ids {
		if won[id] < 850 || won[id] > 1150 {
			t.Fatalf("uneven shares: %v", won)
		}
	}
}

func holdersOn(t *testing.T, url, id string, ttl time.Duration) *Holders {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return NewHolders(rdb, HoldersOptions{Prefix: "test:", ID: id, TTL: ttl, Membership: time.Nanosecond}) // every announce rereads the sets
}

// Three instances on one real Redis: they agree on every group's reader;
// one shutting down is out of the others' views at their next announce;
// one that dies (no more announces) is out once its TTL passed.
func TestHoldersAgreeAndExpire(t *testing.T) {
	r := redistest.Require(t)
	ctx := context.Background()
	const ttl = 300 * time.Millisecond
	hs := []*Holders{holdersOn(t, r.URL, "i1", ttl), holdersOn(t, r.URL, "i2", ttl), holdersOn(t, r.URL, "i3", ttl)}
	groups := make([]string, 30)
	for i := range groups {
		groups[i] = fmt.Sprintf("articles\x00class-%d\x00{}", i)
	}
	held := map[*Holders][]string{hs[0]: groups, hs[1]: groups, hs[2]: append([]string{"only-i3"}, groups...)}
	announceAll := func(hs ...*Holders) {
		t.Helper()
		for range 2 { // the first of each sees the ones before it only
			for _, h := range hs {
				if err := h.Announce(ctx, held[h]); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	announceAll(hs...)
	readers := map[string]string{}
	for _, g := range groups {
		readers[g] = hs[0].Reader(g)
		for _, h := range hs[1:] {
			if got := h.Reader(g); got != readers[g] {
				t.Fatalf("%q: %s reads for i1, %s for %s", g, readers[g], got, h.ID())
			}
		}
		if live := hs[1].Live(g); len(live) != 3 {
			t.Fatalf("%q: live %v", g, live)
		}
	}
	if got := hs[0].Live("only-i3"); len(got) != 0 {
		t.Fatalf("i1 sees holders of a group it does not hold: %v", got)
	}
	// A view older than the TTL (announces failing: cut from Redis) is not
	// trusted: the instance reads for every group itself.
	hs[1].mu.Lock()
	fresh := hs[1].fresh
	hs[1].fresh = time.Now().Add(-2 * ttl)
	hs[1].mu.Unlock()
	for _, g := range groups {
		if hs[1].Reader(g) != "i2" || hs[1].Settled(g) {
			t.Fatalf("%q: a stale view still names reader %s", g, hs[1].Reader(g))
		}
	}
	hs[1].mu.Lock()
	hs[1].fresh = fresh
	hs[1].mu.Unlock()

	// i2 shuts down: gone from the views at the next announce.
	if err := hs[1].Close(ctx); err != nil {
		t.Fatal(err)
	}
	announceAll(hs[0], hs[2])
	for _, g := range groups {
		want := rendezvous(g, []string{"i1", "i3"})
		if got := hs[0].Reader(g); got != want || hs[2].Reader(g) != want {
			t.Fatalf("%q after i2 left: readers %s and %s, want %s", g, got, hs[2].Reader(g), want)
		}
		if readers[g] != "i2" && want != readers[g] {
			t.Fatalf("%q: i2 left and the reader moved from %s", g, readers[g])
		}
	}

	// i3 dies: it announces no more; once its TTL passed, i1 reads for all.
	deadline := time.Now().Add(10 * ttl)
	for {
		if err := hs[0].Announce(ctx, groups); err != nil {
			t.Fatal(err)
		}
		if len(hs[0].Live(groups[0])) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("i3 still live after %s: %v", 10*ttl, hs[0].Live(groups[0]))
		}
		time.Sleep(ttl / 10) // waiting for Redis's clock to pass the expiry, polled
	}
	for _, g := range groups {
		if got := hs[0].Reader(g); got != "i1" {
			t.Fatalf("%q: reader %s with i1 alone", g, got)
		}
	}
}
