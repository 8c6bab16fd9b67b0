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

// blockingWatcher's reread lasts until its context ends (Directus hanging).
type blockingWatcher struct{ started chan struct{} }

func (w *blockingWatcher) Class(c Credentials, _ string, _ Query) string { return "all" }
func (w *blockingWatcher) IsAccessEvent(e Event) bool                    { return e.Collection == "sys" }
func (w *blockingWatcher) AccessChanged(ctx context.Context, _ []Event, _ []Credentials) ([]string, error) {
	close(w.started)
	<-ctx.Done()
	return nil, ctx.Err()
}
func (w *blockingWatcher) Refresh(context.Context, []Credentials) error { return nil }

// A shutdown during an access change's reread cancels it: the events
// behind the change are listed in the shutdown notice, and Stop and Close
// return at once instead of after AccessTimeout (issue 19.1: an event the
// webhook acknowledged was neither delivered nor reported, and Close
// blocked 30 s more).
func TestStopCancelsAccessReread(t *testing.T) {
	w := &blockingWatcher{started: make(chan struct{})}
	r := newRig(t, Options{Classifier: w, Access: w, AccessTimeout: time.Hour})
	r.reader.set("1", `{"title":"x"}`)
	_, sink := r.sub(t, "a", AttachOptions{})
	if err := r.b.Publish(context.Background(), []Event{{Action: ActionUpdate, Collection: "sys", Keys: []string{"u"}}}); err != nil {
		t.Fatal(err)
	}
	behind := r.publish(t, update("1"))
	<-w.started
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	told, missed := r.b.Stop(ctx)
	if ctx.Err() != nil {
		t.Fatal("Stop waited for the reread until its own deadline")
	}
	if told != 1 || missed != 1 {
		t.Fatalf("told %d subscriptions of %d events, want 1 and 1", told, missed)
	}
	got := sink.got()
	if n := got[len(got)-1]; n != "notice:EVENTS_MISSED:"+behind[0].ID+":1" {
		t.Fatalf("the event behind the change is not reported: %v", got)
	}
	closed := make(chan error, 1)
	go func() { closed <- r.b.Close() }()
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("Close blocked on the reread")
	}
}
