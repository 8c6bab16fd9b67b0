package session

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestQuery(t *testing.T) {
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
		{"null values are dropped (never sent to Directus)", `{"fields":null,"filter":{"a":{"_eq":null}},"x":null}`, `{"filter":{"a":{"_eq":null}}}`, false},
		{"only nulls", `{"a":null,"b":null}`, `null`, false},
		{"bad filter text", `{"filter":"{nope"}`, ``, true},
		{"bad limit", `{"limit":"ten"}`, ``, true},
		{"not an object", `[1]`, ``, true},
		{"too large for a Directus URL", `{"filter":{"title":{"_eq":"` + strings.Repeat("x", MaxQueryURL) + `"}}}`, ``, true},
		{"large but fits", `{"filter":{"title":{"_eq":"` + strings.Repeat("x", MaxQueryURL/2) + `"}}}`, `{"filter":{"title":{"_eq":"` + strings.Repeat("x", MaxQueryURL/2) + `"}}}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Query(json.RawMessage(tc.in))
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
	a, _ := Query(json.RawMessage(`{"fields":"id,title","limit":"5"}`))
	b, _ := Query(json.RawMessage(`{"fields":["id","title"],"limit":5}`))
	if a.Key() != b.Key() {
		t.Fatalf("keys differ: %s vs %s", a.Key(), b.Key())
	}
}

func TestItemID(t *testing.T) {
	for in, want := range map[string]string{`7`: "7", `"abc"`: "abc", `"a/b"`: "a/b", `1.5`: "1.5"} {
		got, err := ItemID(json.RawMessage(in))
		if err != nil || got != want {
			t.Errorf("%s: %q %v", in, got, err)
		}
	}
	for _, in := range []string{``, `""`, `"."`, `".."`, `{}`, `[1]`, `true`} {
		if _, err := ItemID(json.RawMessage(in)); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}

func TestUIDString(t *testing.T) {
	for in, want := range map[string]string{`"a"`: "a", `7`: "7", `1.5`: "1.5", `1e3`: "1000", `""`: ""} {
		got, ok := UIDString(json.RawMessage(in))
		if !ok || got != want {
			t.Errorf("%s: got %q %v, want %q", in, got, ok, want)
		}
	}
}
