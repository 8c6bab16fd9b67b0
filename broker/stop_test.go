package broker

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A shutdown that cuts deliveries short tells each subscription once of
// exactly the events it was not sent, each once, even when several groups
// skipped them (it used to count every group's copy).
func TestStopReportsEachMissedEventOnce(t *testing.T) {
	r := newRig(t, Options{})
	r.reader.set("1", `{"title":"x"}`)
	r.reader.gate = make(chan struct{}) // reads never finish: cancelled by Stop
	r.reader.started = make(chan string, 16)
	_, a := r.sub(t, "a", AttachOptions{})
	_, b := r.sub(t, "b", AttachOptions{})
	r.publish(t, update("1"), update("1"), update("1"))
	<-r.reader.started
	<-r.reader.started // both groups are reading
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	told, missed := r.b.Stop(ctx)
	if told != 2 || missed != 6 {
		t.Fatalf("told %d subscriptions of %d subscriber-events, want 2 and 6", told, missed)
	}
	for _, sink := range []*recSink{a, b} {
		got := sink.got()
		if len(got) != 2 || !strings.HasPrefix(got[1], "notice:EVENTS_MISSED:") || !strings.HasSuffix(got[1], ":3") {
			t.Fatalf("want the ack and one EVENTS_MISSED for 3 events, got %v", got)
		}
	}
}
