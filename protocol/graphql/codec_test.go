package graphql

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/internal/codectest"
)

// The codec over a real session and broker, with a fake Directus: the
// graphql-transport-ws messages and close codes, subscriptions shaped by
// their selection, frame by frame.

// schemas is a SchemaSource: tok-a may read articles, others nothing.
type schemas struct{ t *testing.T }

func (s schemas) Schema(_ context.Context, token string) (*Schema, error) {
	if token == "tok-a" {
		return LoadSchema(`type Query { articles: [articles!]! }
type Subscription { articles_mutated(event: EventEnum): articles_mutated }
enum EventEnum { create update delete }
type articles { id: ID! title: String }
type articles_mutated { key: ID! event: EventEnum data: articles }`)
	}
	return LoadSchema(`type Query { _empty: Boolean }`) // nothing readable: no Subscription, as Directus prints it
}

func opts(t *testing.T, mode string) Options {
	return Options{Mode: mode, InitTimeout: time.Minute, AuthTimeout: time.Minute, MaxFrameSize: 1 << 16, Schemas: schemas{t}}
}

func rig(t *testing.T) *codectest.Rig {
	r := codectest.New(t)
	r.Directus.User("tok-a", "a", "articles")
	r.Directus.User("tok-b", "b")
	r.Directus.Item("articles", "1", `{"id":1,"title":"one"}`)
	r.Directus.Item("articles", "2", `{"id":2,"title":"two"}`)
	return r
}

func connect(t *testing.T, r *codectest.Rig, o Options, token string) *codectest.Link {
	t.Helper()
	req := httptest.NewRequest("GET", "/graphql", nil)
	if token != "" {
		req.URL.RawQuery = "access_token=" + token
	}
	return r.Open(t, Endpoint{Options: o}.Open(req))
}

const articlesDoc = `subscription { articles_mutated { key event data { id title } } }`

func subscribeMsg(id, query string) string {
	p, _ := json.Marshal(map[string]any{"query": query})
	return `{"id":"` + id + `","type":"subscribe","payload":` + string(p) + `}`
}

// The handshake with connection_init's access_token, then events: a next
// per key (an update of two items is two messages), a delete with data
// null, and nothing after complete.
func TestHandshakeThenEvents(t *testing.T) {
	r := rig(t)
	l := connect(t, r, opts(t, authHandshake), "")
	l.Handle(`{"type":"connection_init","payload":{"access_token":"tok-a"}}`)
	l.Expect(t, `{"type":"connection_ack"}`)
	l.Handle(subscribeMsg("s1", articlesDoc))
	r.Publish(t, broker.Event{Action: broker.ActionUpdate, Collection: "articles", Keys: []string{"1", "2"}, Payload: json.RawMessage(`{}`)})
	l.Expect(t, `{"id":"s1","type":"next","payload":{"data":{"articles_mutated":{"key":"1","event":"update","data":{"id":"1","title":"one"}}}}}`)
	l.Expect(t, `{"id":"s1","type":"next","payload":{"data":{"articles_mutated":{"key":"2","event":"update","data":{"id":"2","title":"two"}}}}}`)
	r.Publish(t, broker.Event{Action: broker.ActionDelete, Collection: "articles", Keys: []string{"2"}})
	l.Expect(t, `{"id":"s1","type":"next","payload":{"data":{"articles_mutated":{"key":"2","event":"delete","data":null}}}}`)
	l.Handle(`{"id":"s1","type":"complete"}`)
	r.Publish(t, broker.Event{Action: broker.ActionCreate, Collection: "articles", Keys: []string{"1"}, Payload: json.RawMessage(`{}`)})
	l.Quiet(t)
	if got := l.Closed(); got != "" {
		t.Fatalf("closed %q", got)
	}
}

// event: create receives creates only; several subscriptions share one
// socket, each with its own id and shape.
func TestEventFilterAndSeveralSubscriptions(t *testing.T) {
	r := rig(t)
	l := connect(t, r, opts(t, authHandshake), "tok-a") // the token at the upgrade
	l.Handle(`{"type":"connection_init"}`)
	l.Expect(t, `{"type":"connection_ack"}`)
	l.Handle(subscribeMsg("c", `subscription { articles_mutated(event: create) { event key } }`))
	l.Handle(subscribeMsg("all", `subscription { a: articles_mutated { data { t: title } } }`))
	r.Publish(t, broker.Event{Action: broker.ActionUpdate, Collection: "articles", Keys: []string{"1"}, Payload: json.RawMessage(`{}`)})
	l.Expect(t, `{"id":"all","type":"next","payload":{"data":{"a":{"data":{"t":"one"}}}}}`)
	r.Publish(t, broker.Event{Action: broker.ActionCreate, Collection: "articles", Keys: []string{"2"}, Payload: json.RawMessage(`{}`)})
	got := map[string]bool{l.Next(t): true, l.Next(t): true}
	for _, want := range []string{
		`{"id":"c","type":"next","payload":{"data":{"articles_mutated":{"event":"create","key":"2"}}}}`,
		`{"id":"all","type":"next","payload":{"data":{"a":{"data":{"t":"two"}}}}}`,
	} {
		if !got[want] {
			t.Fatalf("frames %v, missing %s", got, want)
		}
	}
}

// A document the token's schema refuses is an error message with
// GraphQL's errors, and the id is free again.
func TestValidationErrors(t *testing.T) {
	r := rig(t)
	l := connect(t, r, opts(t, authHandshake), "tok-b")
	l.Handle(`{"type":"connection_init"}`)
	l.Expect(t, `{"type":"connection_ack"}`)
	l.Handle(subscribeMsg("x", articlesDoc)) // tok-b may not read articles
	f := l.NextMap(t)
	errs, _ := f["payload"].([]any)
	if f["id"] != "x" || f["type"] != "error" || len(errs) != 1 || !strings.Contains(errs[0].(map[string]any)["message"].(string), `Schema does not support operation type "subscription"`) {
		t.Fatalf("answer %v", f)
	}
	l.Handle(subscribeMsg("x", `subscription { nope_mutated { key } }`)) // the same id again: not a duplicate
	if f := l.NextMap(t); f["type"] != "error" {
		t.Fatalf("answer %v", f)
	}
	if got := l.Closed(); got != "" {
		t.Fatalf("closed %q", got)
	}
}

// The close codes of graphql-ws, where Directus uses them.
func TestCloseCodes(t *testing.T) {
	for _, c := range []struct {
		name, mode, token string
		frames            []string
		want              string
	}{
		{"handshake: subscribe before init", authHandshake, "", []string{subscribeMsg("1", articlesDoc)}, "4403 Forbidden"},
		{"handshake: init without a token", authHandshake, "", []string{`{"type":"connection_init","payload":{}}`}, "4403 Forbidden"},
		{"public: subscribe before init", authPublic, "", []string{subscribeMsg("1", articlesDoc)}, "4401 Unauthorized"},
		{"second init", authPublic, "", []string{`{"type":"connection_init"}`, `{"type":"connection_init"}`}, "4429 Too many initialisation requests"},
		{"duplicate id", authPublic, "tok-a", []string{`{"type":"connection_init"}`, subscribeMsg("1", articlesDoc), subscribeMsg("1", articlesDoc)}, "4409 Subscriber for 1 already exists"},
		{"unknown type", authPublic, "", []string{`{"type":"connection_init"}`, `{"type":"bogus"}`}, "4400 Invalid message received"},
		{"subscribe without id", authPublic, "", []string{`{"type":"connection_init"}`, `{"type":"subscribe","payload":{"query":"subscription { x }"}}`}, "4400 Invalid message received"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := connect(t, rig(t), opts(t, c.mode), c.token)
			for _, f := range c.frames {
				l.Handle(f)
			}
			// Closes are asked for while the frame is handled; the frames
			// before them (acks) are not under test.
			if got := l.Closed(); got != c.want {
				t.Fatalf("closed %q, want %q", got, c.want)
			}
		})
	}
}

// A refused token in connection_init is Directus's auth error (no ack);
// without a valid init the init timeout closes 4408.
func TestRefusedTokenThenInitTimeout(t *testing.T) {
	o := opts(t, authHandshake)
	o.InitTimeout = 50 * time.Millisecond
	l := connect(t, rig(t), o, "")
	l.Handle(`{"type":"connection_init","payload":{"access_token":"forged"}}`)
	l.Expect(t, `{"type":"auth","status":"error","error":{"code":"AUTH_FAILED","message":"Authentication failed."}}`)
	if got := l.WaitClosed(t); got != "4408 Connection initialisation timeout" {
		t.Fatalf("closed %q", got)
	}
}

// ping is answered with its payload; bad JSON with Directus's error frame,
// not a close.
func TestPingAndBadJSON(t *testing.T) {
	l := connect(t, rig(t), opts(t, authPublic), "")
	l.Handle(`{"type":"ping","payload":{"n":1}}`)
	l.Expect(t, `{"type":"pong","payload":{"n":1}}`)
	l.Handle(`{"type":"ping"}`)
	l.Expect(t, `{"type":"pong"}`)
	l.Handle(`not json`)
	l.Expect(t, `{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Unable to parse the incoming message."}}`)
	if got := l.Closed(); got != "" {
		t.Fatalf("closed %q", got)
	}
}

// Two subscribers of one document get their own ids around one shaped
// result: the second encode reuses the first's payloads.
func TestEncoderSharesResults(t *testing.T) {
	s, err := schemas{t}.Schema(context.Background(), "tok-a")
	if err != nil {
		t.Fatal(err)
	}
	sub, errs := s.Parse(articlesDoc, nil, "")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	d := &broker.Delivery{Event: broker.Event{Action: broker.ActionUpdate}, Keys: []string{"1", "2"}, Data: json.RawMessage(`[{"id":1,"title":"a"},{"id":2,"title":"b"}]`)}
	one := string(encoder{id: "x", sub: sub}.Event(d, nil))
	if sub.last.d != d || len(sub.last.payloads) != 2 {
		t.Fatalf("results not kept: %d payloads", len(sub.last.payloads))
	}
	sub.last.payloads[0] = json.RawMessage(`"reused"`) // proves the second encode does not shape again
	two := string(encoder{id: "y", sub: sub}.Event(d, nil))
	if !strings.HasPrefix(one, `{"id":"x","type":"next","payload":{"data"`) || !strings.Contains(one, "\x00") {
		t.Fatalf("first: %q", one)
	}
	if want := `{"id":"y","type":"next","payload":"reused"}` + "\x00"; !strings.HasPrefix(two, want) {
		t.Fatalf("second: %q", two)
	}
}

// Re-authenticating as a user that may not read the collection ends the
// subscription with an error message of its own id (Dropped), and frees
// the id.
func TestReauthDropsUnreadable(t *testing.T) {
	r := rig(t)
	l := connect(t, r, opts(t, authHandshake), "")
	l.Handle(`{"type":"connection_init","payload":{"access_token":"tok-a"}}`)
	l.Expect(t, `{"type":"connection_ack"}`)
	l.Handle(subscribeMsg("s1", articlesDoc))
	l.Handle(`{"type":"auth","access_token":"tok-b"}`)
	got := map[string]bool{}
	for range 2 {
		f := l.NextMap(t)
		got[fmt.Sprint(f["type"], " ", f["id"], " ", f["status"])] = true
	}
	if !got["auth <nil> ok"] || !got["error s1 <nil>"] {
		t.Fatalf("frames %v: want the auth ok and s1's error", got)
	}
	r.Publish(t, broker.Event{Action: broker.ActionCreate, Collection: "articles", Keys: []string{"1"}, Payload: json.RawMessage(`{}`)})
	l.Quiet(t)
	l.Handle(subscribeMsg("s1", `subscription { nope_mutated { key } }`)) // s1 is free: an error, not 4409
	if f := l.NextMap(t); f["type"] != "error" || f["id"] != "s1" {
		t.Fatalf("answer %v", f)
	}
}
