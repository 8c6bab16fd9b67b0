package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// staticReader answers every read with the same item: the benchmarks
// measure the broker's own cost, not Directus's.
type staticReader struct{ reads atomic.Int64 }

func (r *staticReader) ReadItems(_ context.Context, _, _ string, keys []string, _ Query) (map[string]json.RawMessage, error) {
	r.reads.Add(1)
	out := make(map[string]json.RawMessage, len(keys))
	for _, k := range keys {
		out[k] = json.RawMessage(`{"id":` + k + `,"title":"hello","status":"published"}`)
	}
	return out, nil
}

func (r *staticReader) ReadSnapshot(context.Context, string, string, Query) (json.RawMessage, error) {
	return json.RawMessage(`[]`), nil
}

type countingSink struct{ n atomic.Int64 }

func (s *countingSink) Send([]byte)         { s.n.Add(1) }
func (s *countingSink) TokenExpired(string) {}

type nopEncoder struct{}

func (nopEncoder) Event(d *Delivery, uid json.RawMessage) []byte {
	return append(append([]byte(nil), d.Data...), uid...)
}
func (nopEncoder) Init(*Subscription, json.RawMessage) []byte { return nil }
func (nopEncoder) Notice(*Subscription, Notice) []byte        { return nil }

// BenchmarkFanout publishes one event to 10,000 subscriptions in 10 token
// groups and reports the broker's cost per delivered frame.
func BenchmarkFanout(b *testing.B) {
	for _, groups := range []int{1, 10} {
		b.Run(fmt.Sprintf("10000subs-%dgroups", groups), func(b *testing.B) {
			reader := &staticReader{}
			br := New(NewMemoryBus(100, time.Hour), reader, Options{}, zerolog.Nop())
			if err := br.Start(); err != nil {
				b.Fatal(err)
			}
			defer br.Close()
			sink := &countingSink{}
			for i := range 10000 {
				s := NewSubscription("c", fmt.Sprint("token-", i%groups), nil, 0, nil, sink, nopEncoder{})
				if err := br.Subscribe(context.Background(), s, AttachOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				ev := []Event{{Action: ActionUpdate, Collection: "c", Keys: []string{fmt.Sprint(i%100 + 1)}, Payload: json.RawMessage(`{"title":"x"}`)}}
				if err := br.Publish(context.Background(), ev); err != nil {
					b.Fatal(err)
				}
				if err := br.Drain(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(sink.n.Load()), "ns/delivery")
			b.ReportMetric(float64(reader.reads.Load())/float64(b.N), "reads/event")
		})
	}
}
