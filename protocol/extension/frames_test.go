package extension

import (
	"encoding/json"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/session"
)

func TestParseFrame(t *testing.T) {
	tests := []struct {
		in, typ, coll string
		uid           string
		bad           bool
	}{
		{`{"type":"GET","collection":"test","uid":{"x":1}}`, "get", "test", `{"x":1}`, false},
		{`{"type":" Subscribe ","collection":"a_b-c"}`, "subscribe", "a_b-c", ``, false},
		{`{"type":"get","collection":"../users","uid":1}`, "get", "", `1`, true},
		{`{"type":"get","collection":"a%2Fb"}`, "get", "", ``, true},
		{`{"collection":"x","uid":"u"}`, "", "", `"u"`, true},
		{`[1,2]`, "", "", ``, true},
		{`{"type":5,"uid":"u"}`, "", "", `"u"`, true},
	}
	for _, tt := range tests {
		f, perr := parseFrame([]byte(tt.in))
		var err error
		if perr != nil {
			err = perr
		} else {
			_, err = session.Collection(f.Collection)
		}
		if (err != nil) != tt.bad {
			t.Errorf("%s: err %v, want bad=%v", tt.in, err, tt.bad)
		}
		if string(f.UID) != tt.uid {
			t.Errorf("%s: uid %s, want %s", tt.in, f.UID, tt.uid)
		}
		if !tt.bad && (f.Type != tt.typ || *f.Collection != tt.coll) {
			t.Errorf("%s: got %q %q", tt.in, f.Type, *f.Collection)
		}
	}
}

// FuzzParseFrame: no input panics the parser, every refusal is a 400 with
// a message, and an accepted frame has a lower-case type and, if it names a
// collection that validates, a plain name.
func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"get","collection":"test","query":{"limit":2}}`,
		`{"type":"post","collection":"test","data":[{"a":1}],"uid":[1]}`,
		`{"type":"PATCH","collection":"test","ids":[7,"6"],"data":{}}`,
		`{"type":"subscribe","collection":"x","event":["create"],"since":"1-2"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		fr, err := parseFrame(msg)
		if err != nil {
			if err.Status != 400 || err.Message == "" {
				t.Fatalf("bad refusal %+v", err)
			}
			return
		}
		if fr.Type == "" {
			t.Fatal("accepted a frame without type")
		}
		if c, err := session.Collection(fr.Collection); err == nil {
			for _, r := range c {
				if r == '/' || r == '.' || r == '%' || r == '?' || r == '#' {
					t.Fatalf("collection %q validated", c)
				}
			}
		}
		_, _ = session.Query(fr.Query)
		_, _ = fr.actions()
		if len(fr.ID) > 0 {
			if id, err := session.ItemID(fr.ID); err == nil && (id == "." || id == ".." || id == "") {
				t.Fatalf("id %q accepted", id)
			}
		}
		// Encoding never produces invalid JSON, whatever the uid.
		if out := errorFrame(session.Invalid("x"), fr.UID, "c"); !json.Valid(out) {
			t.Fatalf("invalid error frame %s", out)
		}
	})
}
