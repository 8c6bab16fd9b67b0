package realtime

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/internal/codectest"
)

// The codec over a real session and broker, with a fake Directus: the
// authentication dance of each mode, subscriptions and items, frame by
// frame as Directus answers them.

func opts(mode string) Options {
	return Options{Mode: mode, AuthTimeout: time.Minute, PingPeriod: time.Hour, MaxFrameSize: 1 << 16}
}

func rig(t *testing.T) *codectest.Rig {
	r := codectest.New(t)
	r.Directus.User("tok-a", "a", "articles")
	r.Directus.User("tok-b", "b")
	r.Directus.Item("articles", "1", `{"id":1,"title":"one"}`)
	r.Directus.Login("a@example.com", "pw", "tok-a")
	return r
}

// connect opens a connection as Endpoint.Open would for a request with
// token (none when "").
func connect(t *testing.T, r *codectest.Rig, o Options, token string) *codectest.Link {
	t.Helper()
	req := httptest.NewRequest("GET", "/realtime", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return r.Open(t, Endpoint{Options: o}.Open(req))
}

func TestHandshakeLogsInThenSubscribes(t *testing.T) {
	r := rig(t)
	l := connect(t, r, opts(authHandshake), "")
	l.Handle(`{"type":"auth","email":"a@example.com","password":"pw","uid":"h"}`)
	l.Expect(t, `{"type":"auth","status":"ok","uid":"h","refresh_token":"refresh-tok-a"}`)
	l.Handle(`{"type":"subscribe","collection":"articles","uid":"s"}`)
	l.Expect(t, `{"type":"subscription","event":"init","data":[{"id":1,"title":"one"}],"uid":"s"}`)
	r.Publish(t, broker.Event{Action: broker.ActionUpdate, Collection: "articles", Keys: []string{"1"}, Payload: json.RawMessage(`{"title":"one"}`)})
	l.Expect(t, `{"type":"subscription","event":"update","data":[{"id":1,"title":"one"}],"uid":"s"}`)
	r.Publish(t, broker.Event{Action: broker.ActionDelete, Collection: "articles", Keys: []string{"1"}, RawKeys: []json.RawMessage{json.RawMessage(`1`)}})
	l.Expect(t, `{"type":"subscription","event":"delete","data":[1],"uid":"s"}`)
	l.Handle(`{"type":"unsubscribe","uid":"s"}`)
	l.Expect(t, `{"type":"subscription","event":"unsubscribe","uid":"s"}`)
}

// In handshake mode anything but a valid auth first fails the handshake
// and closes without a status code, as Directus does; the answer carries
// no uid.
func TestHandshakeFailures(t *testing.T) {
	for _, first := range []string{
		`{"type":"ping","uid":"x"}`,
		`{"type":"auth","access_token":"forged","uid":"x"}`,
		`{"type":"auth","email":"a@example.com","password":"wrong","uid":"x"}`,
		`not json`,
	} {
		l := connect(t, rig(t), opts(authHandshake), "")
		l.Handle(first)
		l.Expect(t, `{"type":"auth","status":"error","error":{"code":"AUTH_FAILED","message":"Authentication handshake failed."}}`)
		if got := l.Closed(); got != "0 " {
			t.Errorf("%s: closed %q, want a close without status code", first, got)
		}
	}
}

// No frame within realtime_auth_timeout fails the handshake.
func TestHandshakeTimeout(t *testing.T) {
	o := opts(authHandshake)
	o.AuthTimeout = time.Millisecond
	l := connect(t, rig(t), o, "")
	l.Expect(t, `{"type":"auth","status":"error","error":{"code":"AUTH_FAILED","message":"Authentication handshake failed."}}`)
}

// Strict mode refuses an upgrade without a token; handshake and public
// modes take it.
func TestEndpointRefusesAnonymousOnlyWhenStrict(t *testing.T) {
	req := httptest.NewRequest("GET", "/realtime", nil)
	if o := (Endpoint{Options: opts(authStrict)}).Open(req); o.RefuseAnonymous == "" {
		t.Fatal("strict mode let a request without a token in")
	}
	for _, m := range []string{authHandshake, authPublic} {
		if o := (Endpoint{Options: opts(m)}).Open(req); o.RefuseAnonymous != "" {
			t.Fatalf("%s mode refused a request without a token: %s", m, o.RefuseAnonymous)
		}
	}
}

// The session cookie is a credential only from an origin named in
// allowed_origins.
func TestSessionCookieOnlyFromListedOrigins(t *testing.T) {
	o := opts(authHandshake)
	o.AllowedOrigins = []string{"https://app.example.com", "*"}
	for origin, want := range map[string]string{"https://app.example.com": "tok-a", "https://evil.example": ""} {
		req := httptest.NewRequest("GET", "/realtime", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Cookie", sessionCookie+"=tok-a")
		if got := (Endpoint{Options: o}).Open(req).Token; got != want {
			t.Errorf("origin %s: token %q, want %q", origin, got, want)
		}
	}
}

// A failed auth in public mode continues as the public role; in the other
// modes it closes.
func TestFailedAuthByMode(t *testing.T) {
	r := rig(t)
	l := connect(t, r, opts(authPublic), "tok-a")
	l.Handle(`{"type":"auth","access_token":"forged","uid":"x"}`)
	l.Expect(t, `{"type":"auth","status":"error","error":{"code":"AUTH_FAILED","message":"Authentication failed."},"uid":"x"}`)
	if got := l.Closed(); got != "" || l.Session().Token() != "" {
		t.Fatalf("public mode: closed %q, token %q (want open, public)", got, l.Session().Token())
	}
	l = connect(t, r, opts(authStrict), "tok-a")
	l.Handle(`{"type":"auth","access_token":"forged","uid":"x"}`)
	l.Next(t)
	if got := l.Closed(); got != "0 " {
		t.Fatalf("strict mode: closed %q", got)
	}
}

func TestSubscribeErrors(t *testing.T) {
	r := rig(t)
	l := connect(t, r, opts(authStrict), "tok-b")
	for frame, want := range map[string]string{
		`{"type":"subscribe","collection":"articles","uid":"1"}`:                `{"type":"subscribe","status":"error","error":{"code":"FORBIDDEN","message":"You don't have permission to access this."},"uid":"1"}`,
		`{"type":"subscribe","uid":"2"}`:                                        `{"type":"subscribe","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: \"collection\" must be a string."},"uid":"2"}`,
		`{"type":"subscribe","collection":"articles","event":"nope","uid":"3"}`: `{"type":"subscribe","status":"error","error":{"code":"INVALID_PAYLOAD","message":"Validation error: \"event\" must be create, update or delete."},"uid":"3"}`,
	} {
		l.Handle(frame)
		l.Expect(t, want)
	}
	if m := r.Broker.Metrics(); m.Subscriptions != 0 {
		t.Fatalf("%d subscriptions attached", m.Subscriptions)
	}
}

func TestItemsAndPing(t *testing.T) {
	r := rig(t)
	l := connect(t, r, opts(authStrict), "tok-a")
	l.Handle(`{"type":"items","collection":"articles","action":"read","id":1,"uid":"i"}`)
	l.Expect(t, `{"type":"items","data":{"id":1,"title":"one"},"uid":"i"}`)
	l.Handle(`{"type":"ping","uid":"p"}`)
	l.Expect(t, `{"type":"pong","uid":"p"}`)
	l.Handle(`{"type":"items","collection":"articles","action":"read","uid":"n"}`)
	l.Expect(t, `{"type":"items","data":[{"id":1,"title":"one"}],"uid":"n"}`)
	for _, req := range r.Directus.Requests() {
		if req.Token != "tok-a" {
			t.Fatalf("request %v made with token %q", req.Segments, req.Token)
		}
	}
}

// A frame over max_frame_size is refused before parsing.
func TestFrameTooLarge(t *testing.T) {
	o := opts(authStrict)
	o.MaxFrameSize = 16
	l := connect(t, rig(t), o, "tok-a")
	l.Handle(`{"type":"ping","uid":"a-uid-too-long-for-the-limit"}`)
	l.Expect(t, `{"type":"server","status":"error","error":{"code":"INVALID_PAYLOAD","message":"The message exceeds max_frame_size."}}`)
}
