package session

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Failures counts failed operations by operation (connect, auth,
// subscribe...) and the code the client was answered; safe for concurrent
// use, and a nil *Failures counts nothing.
type Failures struct {
	m sync.Map // Failure -> *atomic.Int64
}

// Failure is one (operation, code) pair.
type Failure struct{ Op, Code string }

func (f *Failures) add(op string, err error) {
	if f == nil {
		return
	}
	k := Failure{op, AsError(err).Code}
	v, ok := f.m.Load(k)
	if !ok {
		v, _ = f.m.LoadOrStore(k, new(atomic.Int64))
	}
	v.(*atomic.Int64).Add(1)
}

// Count is how often op failed with code.
func (f *Failures) Count(op, code string) int64 {
	if v, ok := f.m.Load(Failure{op, code}); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// Snapshot returns every count, ordered by operation and code.
func (f *Failures) Snapshot() []FailureCount {
	var out []FailureCount
	f.m.Range(func(k, v any) bool {
		out = append(out, FailureCount{k.(Failure), v.(*atomic.Int64).Load()})
		return true
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Op != out[j].Op {
			return out[i].Op < out[j].Op
		}
		return out[i].Code < out[j].Code
	})
	return out
}

// FailureCount is a Failure and how often it happened.
type FailureCount struct {
	Failure
	N int64
}
