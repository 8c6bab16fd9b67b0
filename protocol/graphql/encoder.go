package graphql

import (
	"encoding/json"
	"sync"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// encoder writes one subscription's events as graphql-transport-ws next
// messages: one per key, as Directus sends them (an update of five items is
// five messages), joined by transport.FrameSeparator. Subscribers of one
// document share its *Subscription (Schema.Parse), so the results are
// shaped once per delivery; each subscriber's frames only wrap them in its
// own id.
type encoder struct {
	id  string
	sub *Subscription
}

var _ broker.Encoder = encoder{}

// lastResults is a Subscription's results for the last delivery it
// encoded: a group's members are encoded one after another from one
// *broker.Delivery. It keeps that delivery (its data) until the next one.
type lastResults struct {
	mu       sync.Mutex
	d        *broker.Delivery
	payloads []json.RawMessage
}

// Event implements broker.Encoder. A delete is {key, event, data: null}
// for every key (Directus checks no permission for deletes; the broker
// sends the keys the group may have seen, see broker.Delivery); a create
// or update is each item as the group's read returned it, shaped by the
// selection.
func (e encoder) Event(d *broker.Delivery, _ json.RawMessage) []byte {
	payloads := e.sub.results(d)
	size := 0
	for _, p := range payloads {
		size += len(p) + len(e.id) + 40
	}
	out := make([]byte, 0, size)
	for i, p := range payloads {
		if i > 0 {
			out = append(out, transport.FrameSeparator)
		}
		out = e.next(out, p)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// results are the next payloads of d, one per key (nil: d is not the
// read's answer — nothing rather than a guess).
func (sub *Subscription) results(d *broker.Delivery) []json.RawMessage {
	sub.last.mu.Lock()
	defer sub.last.mu.Unlock()
	if sub.last.d == d {
		return sub.last.payloads
	}
	var items []map[string]any
	var out []json.RawMessage
	if d.Event.Action != broker.ActionDelete {
		if json.Unmarshal(d.Data, &items) != nil || len(items) != len(d.Keys) {
			items, d = nil, nil
		}
	}
	if d != nil {
		for i, k := range d.Keys {
			var item map[string]any
			if items != nil {
				item = items[i]
			}
			out = append(out, sub.Result(k, string(d.Event.Action), item))
		}
	}
	sub.last.d, sub.last.payloads = d, out
	return out
}

func (e encoder) next(b []byte, payload json.RawMessage) []byte {
	b = append(b, `{"id":`...)
	b = appendJSON(b, e.id)
	b = append(b, `,"type":"next","payload":`...)
	b = append(b, payload...)
	return append(b, '}')
}

// Ack implements broker.Encoder: graphql-transport-ws has no answer to a
// subscribe before its first result.
func (e encoder) Ack(*broker.Subscription, bool) []byte { return nil }

// Init implements broker.Encoder: GraphQL subscriptions start from no
// snapshot.
func (e encoder) Init(*broker.Subscription, json.RawMessage) []byte { return nil }

// Notice implements broker.Encoder: events the subscriber could not be
// given are a next message with a GraphQL error (a subscription result may
// carry errors), code and event id in its extensions, so a client sees
// the gap instead of silence.
func (e encoder) Notice(_ *broker.Subscription, n broker.Notice) []byte {
	type ext struct {
		Code    string   `json:"code"`
		EventID string   `json:"event_id,omitempty"`
		Count   int      `json:"count,omitempty"`
		IDs     []string `json:"ids,omitempty"`
	}
	payload, _ := json.Marshal(map[string]any{"errors": []any{map[string]any{
		"message": n.Message, "extensions": ext{Code: n.Code, EventID: n.EventID, Count: n.Count, IDs: n.IDs},
	}}})
	return e.next(nil, payload)
}

// errorMessage is {"id","type":"error","payload":[...]}.
func errorMessage(id string, errs any) []byte {
	b := append([]byte(`{"id":`), mustJSON(id)...)
	b = append(b, `,"type":"error","payload":`...)
	b = append(b, mustJSON(errs)...)
	return append(b, '}')
}

func appendJSON(b []byte, v any) []byte { return append(b, mustJSON(v)...) }

func mustJSON(v any) []byte {
	raw, err := json.Marshal(v)
	if err != nil {
		return []byte("null")
	}
	return raw
}
