package extension

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/internal/codectest"
	"github.com/directus-ws-broker/directus-ws-broker/transport"
)

// The codec over a real session and broker, with a fake Directus: what
// each frame becomes and what the client is answered.

func all() Options {
	return Options{MaxFrameSize: 1 << 16, Get: true, Post: true, Patch: true, Delete: true, Subscribe: true, AuthGrace: time.Minute}
}

func open(t *testing.T, o Options, token string) (*codectest.Rig, *codectest.Link) {
	t.Helper()
	r := codectest.New(t)
	r.Directus.User("tok-a", "a", "articles")
	r.Directus.User("tok-b", "b")
	r.Directus.Item("articles", "1", `{"id":1,"title":"one"}`)
	return r, r.Open(t, transport.Open{Token: token, Codec: &Codec{opts: o}})
}

func TestSubscribeDeliversAndUnsubscribes(t *testing.T) {
	r, l := open(t, all(), "tok-a")
	l.Handle(`{"type":"subscribe","collection":"articles","uid":"u1"}`)
	l.Expect(t, `{"type":"SUBSCRIBED","collection":"articles","uid":"u1"}`)
	r.Publish(t, broker.Event{Action: broker.ActionUpdate, Collection: "articles", Keys: []string{"1"}, Payload: json.RawMessage(`{"title":"one"}`)})
	f := l.NextMap(t)
	if f["type"] != "SUBSCRIPTION" || f["action"] != "update" || f["uid"] != "u1" || f["id"] == "" {
		t.Fatalf("event frame %v", f)
	}
	if d, _ := json.Marshal(f["data"]); string(d) != `[{"id":1,"title":"one"}]` {
		t.Fatalf("event data %s", d)
	}
	l.Handle(`{"type":"unsubscribe","uid":"u1"}`)
	l.Expect(t, `{"type":"UNSUBSCRIBED","collection":"articles","uid":"u1"}`)
	r.Publish(t, broker.Event{Action: broker.ActionDelete, Collection: "articles", Keys: []string{"1"}})
	l.Quiet(t)
}

// A frame without uid subscribes per collection; unsubscribe by collection
// removes it.
func TestSubscribeByCollection(t *testing.T) {
	_, l := open(t, all(), "tok-a")
	l.Handle(`{"type":"subscribe","collection":"articles"}`)
	l.Expect(t, `{"type":"SUBSCRIBED","collection":"articles"}`)
	l.Handle(`{"type":"unsubscribe","collection":"articles"}`)
	l.Expect(t, `{"type":"UNSUBSCRIBED","collection":"articles"}`)
	l.Handle(`{"type":"unsubscribe","collection":"articles"}`)
	if f := l.NextMap(t); f["type"] != "ERROR" || f["data"].(map[string]any)["code"] != "NOT_SUBSCRIBED" {
		t.Fatalf("second unsubscribe: %v", f)
	}
}

// A token that may not read the collection is refused with the
// subscription named, and nothing is attached.
func TestSubscribeRefused(t *testing.T) {
	r, l := open(t, all(), "tok-b")
	l.Handle(`{"type":"subscribe","collection":"articles","uid":"u"}`)
	f := l.NextMap(t)
	data, _ := f["data"].(map[string]any)
	if f["type"] != "ERROR" || f["uid"] != "u" || data["code"] != "FORBIDDEN" || data["collection"] != "articles" {
		t.Fatalf("refusal %v", f)
	}
	if m := r.Broker.Metrics(); m.Subscriptions != 0 {
		t.Fatalf("%d subscriptions attached", m.Subscriptions)
	}
}

func TestInitSendsTheSnapshot(t *testing.T) {
	_, l := open(t, all(), "tok-a")
	l.Handle(`{"type":"subscribe","collection":"articles","uid":"u","init":true}`)
	l.Expect(t, `{"type":"SUBSCRIBED","collection":"articles","uid":"u"}`)
	l.Expect(t, `{"type":"SUBSCRIPTION","action":"init","collection":"articles","data":[{"id":1,"title":"one"}],"uid":"u"}`)
}

// get/post/patch/delete go to the REST API with the connection's token.
func TestItemsForwardedWithTheToken(t *testing.T) {
	r, l := open(t, all(), "tok-a")
	l.Handle(`{"type":"get","collection":"articles","id":1,"uid":"g"}`)
	l.Expect(t, `{"type":"RESPONSE","data":{"id":1,"title":"one"},"uid":"g"}`)
	l.Handle(`{"type":"post","collection":"articles","data":{"title":"new"},"uid":"p"}`)
	l.Expect(t, `{"type":"RESPONSE","data":{"title":"new"},"uid":"p"}`)
	l.Handle(`{"type":"delete","collection":"articles","id":1,"uid":"d"}`)
	l.Expect(t, `{"type":"RESPONSE","data":[1],"uid":"d"}`)
	for _, req := range r.Directus.Requests() {
		if req.Token != "tok-a" {
			t.Fatalf("request %s %v made with token %q", req.Method, req.Segments, req.Token)
		}
	}
}

// Every bad frame is answered with an ERROR naming its uid.
func TestBadFramesAnswered(t *testing.T) {
	o := all()
	o.Patch = false
	_, l := open(t, o, "tok-a")
	for _, c := range []struct{ frame, code string }{
		{`{"type":"patch","collection":"articles","id":1,"data":{},"uid":"x"}`, "FORBIDDEN"},
		{`{"type":"nope","uid":"x"}`, "INVALID_PAYLOAD"},
		{`{"type":"post","collection":"articles","data":"text","uid":"x"}`, "INVALID_PAYLOAD"},
		{`{"type":"delete","collection":"articles","uid":"x"}`, "INVALID_PAYLOAD"},
		{`{"type":"auth","uid":"x"}`, "INVALID_PAYLOAD"},
		{`{"type":"auth","access_token":"forged","uid":"x"}`, "INVALID_CREDENTIALS"},
		{`{"type":"subscribe","collection":"articles","event":"nope","uid":"x"}`, "INVALID_PAYLOAD"},
		{`{"type":"subscribe","collection":"articles","query":{"limit":"x"},"uid":"x"}`, "INVALID_PAYLOAD"},
		{`{"type":"get","collection":"articles","uid":"x","pad":"` + strings.Repeat("a", 1<<16) + `"}`, "FRAME_TOO_LARGE"},
	} {
		l.Handle(c.frame)
		f := l.NextMap(t)
		data, _ := f["data"].(map[string]any)
		if f["type"] != "ERROR" || data["code"] != c.code || f["uid"] != "x" {
			t.Errorf("%.60s: answered %v, want %s with uid x", c.frame, f, c.code)
		}
	}
}

func TestPingAndAuth(t *testing.T) {
	_, l := open(t, all(), "tok-a")
	l.Handle(`{"type":"ping","uid":7}`)
	l.Expect(t, `{"type":"PONG","uid":7}`)
	l.Handle(`{"type":"auth","access_token":"tok-b","uid":"a"}`)
	l.Expect(t, `{"type":"AUTH","status":"ok","uid":"a"}`)
	if got := l.Session().Token(); got != "tok-b" {
		t.Fatalf("token after auth: %q", got)
	}
}

// Over the rate, frames are dropped and the client told once, without
// parsing (no uid).
func TestRateLimitedFrameDropped(t *testing.T) {
	_, l := open(t, all(), "tok-a")
	l.Limit = true
	l.Handle(`{"type":"ping","uid":1}`)
	if f := l.NextMap(t); f["type"] != "ERROR" || f["data"].(map[string]any)["code"] != "RATE_LIMITED" || f["uid"] != nil {
		t.Fatalf("over the rate: %v", f)
	}
	l.Quiet(t)
}

// Without public access the expired grace closes the connection (4001);
// with it, the connection goes on as the public role.
func TestGraceOver(t *testing.T) {
	_, l := open(t, all(), "tok-a")
	l.Session().TokenExpired("tok-a")
	l.Next(t) // TOKEN_EXPIRED
	c := &Codec{opts: all()}
	c.Opened(l)
	c.GraceOver(l.Session())
	if got := l.Closed(); got != "4001 token expired" {
		t.Fatalf("closed %q", got)
	}
	pub := all()
	pub.Public = true
	c = &Codec{opts: pub}
	c.Opened(l)
	c.GraceOver(l.Session())
	if f := l.NextMap(t); f["type"] != "AUTH" || f["status"] != "public" {
		t.Fatalf("public grace over: %v", f)
	}
}
