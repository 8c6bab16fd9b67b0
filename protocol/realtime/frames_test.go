package realtime

import (
	"encoding/json"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/session"
)

func TestParseFrame(t *testing.T) {
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
		f, errFrame := parseFrame([]byte(tc.in))
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
	f, _ := parseFrame([]byte(`{"type":"auth","email":"a@b.c","password":"p","refresh_token":"r"}`))
	if f.Email == nil || *f.Email != "a@b.c" || f.Password == nil || f.RefreshToken == nil || f.AccessToken != nil {
		t.Fatalf("auth fields: %+v", f)
	}
}

func TestRealtimeEncoder(t *testing.T) {
	uid := json.RawMessage(`"s"`)
	create := &broker.Delivery{Event: broker.Event{ID: "1-1", Action: broker.ActionCreate}, Keys: []string{"1", "2"},
		Data: json.RawMessage(`[{"id":1},{"id":2}]`)}
	del := &broker.Delivery{Event: broker.Event{ID: "1-2", Action: broker.ActionDelete}, Keys: []string{"2"}, Data: json.RawMessage(`["2"]`)}
	// Keys Directus wrote as numbers are repeated so, as its realtime does.
	delNum := &broker.Delivery{Event: broker.Event{ID: "1-3", Action: broker.ActionDelete}, Keys: []string{"2"}, Data: json.RawMessage(`["2"]`), RawKeys: json.RawMessage(`[2]`)}
	tests := []struct {
		enc  Encoder
		d    *broker.Delivery
		want string
	}{
		{Encoder{}, create, `{"type":"subscription","event":"create","data":[{"id":1},{"id":2}],"uid":"s"}`},
		{Encoder{ids: true}, create, `{"type":"subscription","event":"create","data":[{"id":1},{"id":2}],"event_id":"1-1","uid":"s"}`},
		{Encoder{item: "2"}, create, `{"type":"subscription","event":"create","data":{"id":2},"uid":"s"}`},
		{Encoder{item: "3"}, create, ``},
		{Encoder{}, del, `{"type":"subscription","event":"delete","data":["2"],"uid":"s"}`},
		{Encoder{}, delNum, `{"type":"subscription","event":"delete","data":[2],"uid":"s"}`},
		{Encoder{item: "2", ids: true}, del, `{"type":"subscription","event":"delete","data":"2","event_id":"1-2","uid":"s"}`},
	}
	for _, tc := range tests {
		if got := string(tc.enc.Event(tc.d, uid)); got != tc.want {
			t.Errorf("%+v %s:\n got %s\nwant %s", tc.enc, tc.d.Event.Action, got, tc.want)
		}
	}
	s := broker.NewSubscription("c", broker.Credentials{}, nil, 0, nil, nil, Encoder{})
	if got := string(Encoder{}.Init(s, nil)); got != `{"type":"subscription","event":"init","data":[]}` {
		t.Errorf("init without uid: %s", got)
	}
}

func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{`{"type":"auth","access_token":"x","uid":1}`, `{"type":"subscribe","query":{"fields":"a,b"}}`, `[]`, `{"type":"items","uid":"u"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		fr, errFrame := parseFrame(msg)
		if errFrame != nil {
			if !json.Valid(errFrame) {
				t.Fatalf("error frame is not JSON: %s", errFrame)
			}
			return
		}
		if len(fr.UID) > 0 {
			if _, ok := session.UIDString(fr.UID); !ok {
				t.Fatalf("accepted uid %s", fr.UID)
			}
		}
	})
}
