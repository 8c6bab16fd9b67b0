package broker

import (
	"fmt"
	"sync"
)

// ErrQueueFull is returned by Dispatcher.TryDispatch when a collection's
// dispatch queue cannot take the events; the webhook answers 503 so the
// Flow logs a failure instead of the event vanishing.
var ErrQueueFull = fmt.Errorf("%w: dispatch queue full", ErrBusUnavailable)

// Dispatcher receives the events a bus delivers, in publish order.
type Dispatcher interface {
	// Dispatch queues e, waiting while its collection's queue is full (a
	// bus reading from a network uses it: waiting is its backpressure).
	Dispatch(e Event)
	// TryDispatch queues all of events, or none and returns ErrQueueFull
	// when a queue they go to is full. It never waits, so a publisher
	// holding a lock for ID order never stalls other collections.
	TryDispatch(events []Event) error
}

// task is one unit of a shard's queue: an event to dispatch, or work
// (attach, drain barrier, access change) that runs between two dispatch
// rounds, in queue order.
type task struct {
	event Event
	fn    func()
}

// queue is a shard's FIFO of tasks. Events are bounded (max); control tasks
// are not, because each has a caller waiting for it.
type queue struct {
	mu     sync.Mutex
	tasks  []task
	head   int
	events int // event tasks queued
	max    int
	wake   chan struct{} // signalled when tasks were added
	space  chan struct{} // signalled when events were taken
}

func newQueue(max int) *queue {
	return &queue{max: max, wake: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// pushControl queues fn; it never waits.
func (q *queue) pushControl(fn func()) {
	q.mu.Lock()
	q.tasks = append(q.tasks, task{fn: fn})
	q.mu.Unlock()
	signal(q.wake)
}

// pushEvent queues e, waiting for room until done is closed (false then).
func (q *queue) pushEvent(e Event, done <-chan struct{}) bool {
	for {
		q.mu.Lock()
		if q.events < q.max {
			q.tasks = append(q.tasks, task{event: e})
			q.events++
			q.mu.Unlock()
			signal(q.wake)
			return true
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-done:
			return false
		}
	}
}

// room reports how many more events q takes now; the caller holds q.mu.
func (q *queue) roomLocked() int { return q.max - q.events }

// appendLocked queues tasks; the caller holds q.mu and checked the room.
func (q *queue) appendLocked(tasks []task) {
	for _, t := range tasks {
		q.tasks = append(q.tasks, t)
		if t.fn == nil {
			q.events++
		}
	}
}

// next waits for work and returns the events at the head of the queue (at
// most max, stopping before a control task) or, when the head is a control
// task, that task alone. ok is false once done is closed.
func (q *queue) next(buf []Event, max int, done <-chan struct{}) (events []Event, ctrl func(), ok bool) {
	for {
		q.mu.Lock()
		if q.head < len(q.tasks) {
			break
		}
		q.mu.Unlock()
		select {
		case <-q.wake:
		case <-done:
			return nil, nil, false
		}
	}
	defer q.mu.Unlock()
	if t := q.tasks[q.head]; t.fn != nil {
		q.tasks[q.head] = task{}
		q.head++
		q.compactLocked()
		return nil, t.fn, true
	}
	events = buf[:0]
	for q.head < len(q.tasks) && len(events) < max && q.tasks[q.head].fn == nil {
		events = append(events, q.tasks[q.head].event)
		q.tasks[q.head] = task{}
		q.head++
	}
	q.events -= len(events)
	q.compactLocked()
	signal(q.space)
	return events, nil, true
}

// compactLocked reclaims the consumed prefix once it dominates the slice.
func (q *queue) compactLocked() {
	if q.head == len(q.tasks) {
		q.tasks, q.head = q.tasks[:0], 0
		return
	}
	if q.head > 1024 && q.head*2 > len(q.tasks) {
		n := copy(q.tasks, q.tasks[q.head:])
		clear(q.tasks[n:])
		q.tasks, q.head = q.tasks[:n], 0
	}
}

// oldest is the receive time (unix ns) of the oldest event waiting, 0 when
// none waits or none says.
func (q *queue) oldest() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, t := range q.tasks[q.head:] {
		if t.fn == nil && !t.event.Received.IsZero() {
			return t.event.Received.UnixNano()
		}
	}
	return 0
}

// depth is the number of events waiting.
func (q *queue) depth() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.events
}

// tryPushAll queues each shard's tasks, all or none: it locks the queues
// in shard order (one lock order, so concurrent callers cannot deadlock),
// checks that every queue has room for its events, then appends.
func tryPushAll(shards []*shard, perShard map[int][]task) error {
	idx := make([]int, 0, len(perShard))
	for i := range shards {
		if len(perShard[i]) > 0 {
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		shards[i].queue.mu.Lock()
	}
	var err error
	for _, i := range idx {
		events := 0
		for _, t := range perShard[i] {
			if t.fn == nil {
				events++
			}
		}
		if shards[i].queue.roomLocked() < events {
			err = ErrQueueFull
			break
		}
	}
	if err == nil {
		for _, i := range idx {
			shards[i].queue.appendLocked(perShard[i])
		}
	}
	for _, i := range idx {
		shards[i].queue.mu.Unlock()
	}
	if err == nil {
		for _, i := range idx {
			signal(shards[i].queue.wake)
		}
	}
	return err
}

// DispatchFunc adapts a function to a Dispatcher that takes every event (for
// tests and tools that consume a bus directly).
type DispatchFunc func(Event)

// Dispatch implements Dispatcher.
func (f DispatchFunc) Dispatch(e Event) { f(e) }

// TryDispatch implements Dispatcher.
func (f DispatchFunc) TryDispatch(events []Event) error {
	for _, e := range events {
		f(e)
	}
	return nil
}
