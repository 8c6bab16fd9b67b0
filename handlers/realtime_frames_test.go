package handlers

import (
	"encoding/json"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

func TestNormalizeQuery(t *testing.T) {
	tests := []struct {
		name, in, want string
		bad            bool
	}{
		{"none", ``, `null`, false},
		{"empty", `{}`, `null`, false},
		{"object form is kept", `{"fields":["id","title"],"filter":{"a":{"_eq":1}},"limit":10}`, `{"fields":["id","title"],"filter":{"a":{"_eq":1}},"limit":10}`, false},
		{"SDK form", `{"fields":"id, title","filter":"{\"a\":{\"_eq\":1}}","limit":"10","sort":"-id,title","offset":"2"}`,
			`{"fields":["id","title"],"filter":{"a":{"_eq":1}},"limit":10,"offset":2,"sort":["-id","title"]}`, false},
		{"unknown keys pass", `{"search":"x","version":"draft"}`, `{"search":"x","version":"draft"}`, false},
		{"bad filter text", `{"filter":"{nope"}`, ``, true},
		{"bad limit", `{"limit":"ten"}`, ``, true},
		{"not an object", `[1]`, ``, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := normalizeQuery(json.RawMessage(tc.in))
			if tc.bad {
				if err == nil {
					t.Fatalf("want an error, got %v", q)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(q)
			if string(got) != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
	// Both forms make the same group key: one read serves both.
	a, _ := normalizeQuery(json.RawMessage(`{"fields":"id,title","limit":"5"}`))
	b, _ := normalizeQuery(json.RawMessage(`{"fields":["id","title"],"limit":5}`))
	if a.Key() != b.Key() {
		t.Fatalf("keys differ: %s vs %s", a.Key(), b.Key())
	}
}

func TestParseRealtimeFrame(t *testing.T) {
	tests := []struct {
		in, typ, uid string
		bad          bool
	}{
		{`{"type":"ping","uid":5}`, "ping", `5`, false},
		{`{"type":"subscribe","uid":"s1","collection":"x"}`, "subscribe", `"s1"`, false},
		{`{"type":"anything"}`, "anything", ``, false},
		{`not json`, "", "", true},
		{`[1]`, "", "", true},
		{`{"uid":"x"}`, "", "", true},
		{`{"type":5}`, "", "", true},
		{`{"type":"ping","uid":{"a":1}}`, "", "", true},
		{`{"type":"ping","uid":true}`, "", "", true},
	}
	for _, tc := range tests {
		f, errFrame := parseRealtimeFrame([]byte(tc.in))
		if tc.bad {
			var m map[string]any
			if errFrame == nil || json.Unmarshal(errFrame, &m) != nil || m["type"] != "server" || m["status"] != "error" {
				t.Errorf("%s: want a server error frame, got %s", tc.in, errFrame)
			}
			continue
		}
		if errFrame != nil || f.Type != tc.typ || string(f.UID) != tc.uid {
			t.Errorf("%s: got type %q uid %s err %s", tc.in, f.Type, f.UID, errFrame)
		}
	}
	f, _ := parseRealtimeFrame([]byte(`{"type":"auth","email":"a@b.c","password":"p","refresh_token":"r"}`))
	if f.Email == nil || *f.Email != "a@b.c" || f.Password == nil || f.RefreshToken == nil || f.AccessToken != nil {
		t.Fatalf("auth fields: %+v", f)
	}
}

func TestUIDString(t *testing.T) {
	for in, want := range map[string]string{`"a"`: "a", `7`: "7", `1.5`: "1.5", `1e3`: "1000", `""`: ""} {
		got, ok := uidString(json.RawMessage(in))
		if !ok || got != want {
			t.Errorf("%s: got %q %v, want %q", in, got, ok, want)
		}
	}
}

func TestRealtimeEncoder(t *testing.T) {
	uid := json.RawMessage(`"s"`)
	create := &broker.Delivery{Event: broker.Event{ID: "1-1", Action: broker.ActionCreate}, Keys: []string{"1", "2"},
		Data: json.RawMessage(`[{"id":1},{"id":2}]`)}
	del := &broker.Delivery{Event: broker.Event{ID: "1-2", Action: broker.ActionDelete}, Keys: []string{"2"}, Data: json.RawMessage(`["2"]`)}
	tests := []struct {
		enc  realtimeEncoder
		d    *broker.Delivery
		want string
	}{
		{realtimeEncoder{}, create, `{"type":"subscription","event":"create","data":[{"id":1},{"id":2}],"event_id":"1-1","uid":"s"}`},
		{realtimeEncoder{item: "2"}, create, `{"type":"subscription","event":"create","data":{"id":2},"event_id":"1-1","uid":"s"}`},
		{realtimeEncoder{item: "3"}, create, ``},
		{realtimeEncoder{}, del, `{"type":"subscription","event":"delete","data":["2"],"event_id":"1-2","uid":"s"}`},
		{realtimeEncoder{item: "2"}, del, `{"type":"subscription","event":"delete","data":"2","event_id":"1-2","uid":"s"}`},
	}
	for _, tc := range tests {
		if got := string(tc.enc.Event(tc.d, uid)); got != tc.want {
			t.Errorf("%+v %s:\n got %s\nwant %s", tc.enc, tc.d.Event.Action, got, tc.want)
		}
	}
	s := broker.NewSubscription("c", "", nil, 0, nil, nil, realtimeEncoder{})
	if got := string(realtimeEncoder{}.Init(s, nil)); got != `{"type":"subscription","event":"init","data":[]}` {
		t.Errorf("init without uid: %s", got)
	}
}

func FuzzParseRealtimeFrame(f *testing.F) {
	for _, s := range []string{`{"type":"auth","access_token":"x","uid":1}`, `{"type":"subscribe","query":{"fields":"a,b"}}`, `[]`, `{"type":"items","uid":"u"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		fr, errFrame := parseRealtimeFrame(msg)
		if errFrame != nil {
			if !json.Valid(errFrame) {
				t.Fatalf("error frame is not JSON: %s", errFrame)
			}
			return
		}
		if len(fr.UID) > 0 {
			if _, ok := uidString(fr.UID); !ok {
				t.Fatalf("accepted uid %s", fr.UID)
			}
		}
	})
}
