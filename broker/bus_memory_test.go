package broker

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func publish(t *testing.T, b *MemoryBus, collection string, n int) []string {
	t.Helper()
	var ids []string
	for range n {
		ev := []Event{{Action: ActionUpdate, Collection: collection, Keys: []string{"1"}}}
		if err := b.Publish(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ev[0].ID)
	}
	return ids
}

func TestMemoryBusHistory(t *testing.T) {
	b := NewMemoryBus(3, time.Hour)
	var delivered []string
	_ = b.Start(DispatchFunc(func(e Event) { delivered = append(delivered, e.ID) }))
	a := publish(t, b, "a", 2)
	publish(t, b, "b", 1)
	a = append(a, publish(t, b, "a", 3)...) // a keeps the last 3 of 5

	if len(delivered) != 6 {
		t.Fatalf("delivered %d", len(delivered))
	}
	for i := 1; i < len(delivered); i++ {
		if CompareIDs(delivered[i-1], delivered[i]) >= 0 {
			t.Fatalf("IDs not increasing: %v", delivered)
		}
	}
	events, gap, _ := b.History(context.Background(), "a", a[2])
	if gap || len(events) != 2 || events[0].ID != a[3] || events[1].ID != a[4] {
		t.Fatalf("since a kept id: gap=%v %v", gap, events)
	}
	_, gap, _ = b.History(context.Background(), "a", a[1])
	if gap {
		t.Fatal("since the newest dropped event: nothing is missing, no gap")
	}
	events, gap, _ = b.History(context.Background(), "a", a[0])
	if !gap || len(events) != 3 {
		t.Fatalf("since an event older than the history: want gap, got gap=%v %v", gap, events)
	}
	events, gap, _ = b.History(context.Background(), "a", a[4])
	if gap || len(events) != 0 {
		t.Fatalf("since the newest: want nothing, got %v %v", gap, events)
	}
	_, gap, _ = b.History(context.Background(), "a", fmt.Sprintf("%d-1", b.epoch-1))
	if !gap {
		t.Fatal("an id from another process must report a gap")
	}
}

func TestMemoryBusHistoryAge(t *testing.T) {
	b := NewMemoryBus(100, time.Minute)
	now := time.Unix(1000, 0)
	b.now = func() time.Time { return now }
	_ = b.Start(DispatchFunc(func(Event) {}))
	ids := publish(t, b, "a", 2)
	now = now.Add(2 * time.Minute)
	later := publish(t, b, "a", 1)
	events, gap, _ := b.History(context.Background(), "a", ids[0])
	if !gap || len(events) != 1 || events[0].ID != later[0] {
		t.Fatalf("expired events: want gap and only the fresh one, got %v %v", gap, events)
	}
}

func TestCompareIDs(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{{"1-2", "1-10", -1}, {"2-0", "1-99", 1}, {"5-5", "5-5", 0}} {
		if got := CompareIDs(c.a, c.b); got != c.want {
			t.Errorf("%s vs %s: %d", c.a, c.b, got)
		}
	}
	for id, ok := range map[string]bool{"1-2": true, "12": false, "a-1": false, "1-": false} {
		if ValidID(id) != ok {
			t.Errorf("ValidID(%q) != %v", id, ok)
		}
	}
}

// The history is a ring: once full, each push overwrites the oldest event,
// and what it keeps is the newest maxLen in order, with the gap reported
// for an id it no longer holds the successor of.
func TestMemoryBusRingWraps(t *testing.T) {
	b := NewMemoryBus(4, time.Hour)
	_ = b.Start(DispatchFunc(func(Event) {}))
	ids := publish(t, b, "a", 11)
	events, gap, _ := b.History(context.Background(), "a", ids[6])
	if gap || len(events) != 4 {
		t.Fatalf("after the 7th: %d events, gap %v", len(events), gap)
	}
	for i, e := range events {
		if e.ID != ids[7+i] {
			t.Fatalf("event %d is %s, want %s", i, e.ID, ids[7+i])
		}
	}
	if _, gap, _ := b.History(context.Background(), "a", ids[5]); !gap {
		t.Fatal("the 7th event is no longer kept: a resume after the 6th must report a gap")
	}
}
