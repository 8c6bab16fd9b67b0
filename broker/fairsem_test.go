package broker

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// Waiters are served round robin by owner: an owner with many waiters gets
// one slot per turn.
func TestFairSemServesOwnersInTurn(t *testing.T) {
	s := newFairSem(1)
	if err := s.acquire(context.Background(), "x"); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 8)
	// wait starts a waiter of owner and returns once owner has one queued
	// (the many's second and third may register later: they queue behind
	// the first in the same turn either way).
	wait := func(owner string) {
		go func() {
			_ = s.acquire(context.Background(), owner)
			order <- owner
			s.release(owner, 0)
		}()
		for !queued(s, owner) {
			runtime.Gosched()
		}
	}
	for range 3 {
		wait("many")
	}
	wait("one")
	s.release("x", 0)
	got := []string{<-order, <-order, <-order, <-order}
	if got[0] != "many" || got[1] != "one" {
		t.Fatalf("served %v: the single waiter must come second, before the rest of the many", got)
	}
}

func queued(s *fairSem, owner string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queues[owner]) > 0
}

// A waiter whose context ends leaves the queue; a slot granted as it gave
// up is passed on, not lost.
func TestFairSemCancel(t *testing.T) {
	s := newFairSem(1)
	_ = s.acquire(context.Background(), "a")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.acquire(ctx, "b"); err == nil {
		t.Fatal("acquire with a done context succeeded while no slot was free")
	}
	s.release("a", 0)
	if err := s.acquire(context.Background(), "c"); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.free != 0 || len(s.order) != 0 {
		t.Fatalf("free %d, owners waiting %v", s.free, s.order)
	}
}

// No owner holds more than one of 32 slots: the others get in even while
// its reads hang.
func TestFairSemCapsOwners(t *testing.T) {
	s := newFairSem(32)
	if err := s.acquire(context.Background(), "many"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.acquire(ctx, "many"); err == nil {
		t.Fatal("an owner took a second of 32 slots")
	}
	for _, o := range []string{"a", "b", "c"} {
		if err := s.acquire(ctx, o); err != nil {
			t.Fatalf("%s could not take a free slot: %v", o, err)
		}
	}
}

// An owner with reads waiting rests as long as it held its slot, while
// another owner read within the last second; alone, it never rests.
func TestFairSemBackloggedOwnerRests(t *testing.T) {
	s := newFairSem(32)
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	ctx := context.Background()
	if err := s.acquire(ctx, "many"); err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() { _ = s.acquire(ctx, "many"); close(got) }()
	for !queued(s, "many") {
		runtime.Gosched()
	}
	s.release("many", time.Hour) // alone: the next read may start at once
	<-got
	_ = s.acquire(ctx, "other") // another owner reads
	s.release("other", 0)
	got = make(chan struct{})
	go func() { _ = s.acquire(ctx, "many"); close(got) }()
	for !queued(s, "many") {
		runtime.Gosched()
	}
	s.release("many", time.Hour) // others active: rests an hour (simulated)
	select {
	case <-got:
		t.Fatal("a backlogged owner took a slot again at once while another owner was active")
	default:
	}
	if err := s.acquire(ctx, "other"); err != nil {
		t.Fatalf("the other owner must get a slot while the many rest: %v", err)
	}
	s.mu.Lock()
	now = now.Add(time.Hour)
	s.grantLocked()
	s.mu.Unlock()
	<-got
}
