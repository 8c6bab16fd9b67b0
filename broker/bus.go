package broker

import (
	"context"
	"errors"
	"strconv"
	"strings"
)

// Bus carries published events to every broker instance, each exactly once,
// and keeps a bounded history for resumes. Implementations assign event IDs
// that order events within a collection and compare with CompareIDs.
type Bus interface {
	// Publish accepts all events or none. It returns once the events are
	// stored in the bus, with their IDs set.
	Publish(ctx context.Context, events []Event) error
	// Start begins delivering every event published to the bus, in publish
	// order, to d.
	Start(d Dispatcher) error
	// History returns the events of collection published after since, in
	// order. gap is true when events after since may no longer be kept.
	History(ctx context.Context, collection, since string) (events []Event, gap bool, err error)
	// Horizon is the ID of the newest event published before this instance
	// began receiving events ("" if none): such events never arrive live
	// here, so a resume may replay kept events up to it.
	Horizon() string
	// Ready reports whether the bus can publish now.
	Ready(ctx context.Context) error
	Close() error
}

// ErrBusUnavailable is returned by Publish when the bus cannot take events
// now; the webhook answers 503 so the sender logs a failure.
var ErrBusUnavailable = errors.New("event bus unavailable")

// CompareIDs orders two event IDs of the form "<ms>-<seq>" (Redis stream IDs
// and the memory bus's IDs alike). Malformed IDs sort first.
func CompareIDs(a, b string) int {
	am, as := splitID(a)
	bm, bs := splitID(b)
	switch {
	case am != bm:
		return cmpUint(am, bm)
	default:
		return cmpUint(as, bs)
	}
}

// ValidID reports whether id has the "<ms>-<seq>" form.
func ValidID(id string) bool {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return false
	}
	_, err1 := strconv.ParseUint(ms, 10, 64)
	_, err2 := strconv.ParseUint(seq, 10, 64)
	return err1 == nil && err2 == nil
}

func splitID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	a, _ := strconv.ParseUint(ms, 10, 64)
	b, _ := strconv.ParseUint(seq, 10, 64)
	return a, b
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
