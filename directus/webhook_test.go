package directus

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestNormalizeFlowFixtures runs every body a real Directus 12.3.1 Flow sent
// (captured in testdata, copied from shared/fixtures) through the normalizer
// and compares with the golden events.
func TestNormalizeFlowFixtures(t *testing.T) {
	f, err := os.Open("testdata/directus-12.3.1-flow-request-bodies.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []broker.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		events, err := NormalizeWebhook(line.Body)
		if err != nil {
			t.Fatalf("%s: %v", line.Body, err)
		}
		got = append(got, events...)
	}
	golden(t, "flow-12.3.1.golden.json", got)
}

func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update once to create it)", err)
	}
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
		t.Errorf("%s differs:\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestNormalizeShapes(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []broker.Event
	}{
		{"flow create: key becomes keys", `{"event":"test.items.create","payload":{"a":1},"key":4,"collection":"test"}`,
			[]broker.Event{{Action: "create", Collection: "test", Keys: []string{"4"}, Payload: json.RawMessage(`{"a":1}`)}}},
		{"flow update with numeric keys", `{"event":"test.items.update","payload":{"a":1},"keys":[5,6],"collection":"test"}`,
			[]broker.Event{{Action: "update", Collection: "test", Keys: []string{"5", "6"}, Payload: json.RawMessage(`{"a":1}`)}}},
		{"collection taken from the event name", `{"event":"posts.items.delete","payload":["x"],"keys":["x"]}`,
			[]broker.Event{{Action: "delete", Collection: "posts", Keys: []string{"x"}, Payload: json.RawMessage(`["x"]`), RawKeys: []json.RawMessage{json.RawMessage(`"x"`)}}}},
		{"collection name containing items", `{"event":"my_items.items.update","payload":{},"keys":[1],"collection":"my_items"}`,
			[]broker.Event{{Action: "update", Collection: "my_items", Keys: []string{"1"}, Payload: json.RawMessage(`{}`)}}},
		{"legacy webhook", `{"event":"items.update","accountability":{"user":"u","role":"r"},"payload":{"t":"x"},"keys":["3"],"collection":"test"}`,
			[]broker.Event{{Action: "update", Collection: "test", Keys: []string{"3"}, Payload: json.RawMessage(`{"t":"x"}`)}}},
		{"legacy delete with keys only in payload", `{"event":"items.delete","payload":[7,8],"collection":"test"}`,
			[]broker.Event{{Action: "delete", Collection: "test", Keys: []string{"7", "8"}, Payload: json.RawMessage(`["7","8"]`), RawKeys: []json.RawMessage{json.RawMessage(`7`), json.RawMessage(`8`)}}}},
		{"extension shape", `{"action":"UPDATE","payload":{"test":"new"},"keys":["3"],"collection":"test"}`,
			[]broker.Event{{Action: "update", Collection: "test", Keys: []string{"3"}, Payload: json.RawMessage(`{"test":"new"}`)}}},
		{"array of shapes", `[{"action":"create","payload":{},"keys":[1],"collection":"a"},{"event":"b.items.delete","keys":["2"]}]`,
			[]broker.Event{{Action: "create", Collection: "a", Keys: []string{"1"}, Payload: json.RawMessage(`{}`)}, {Action: "delete", Collection: "b", Keys: []string{"2"}, Payload: json.RawMessage(`["2"]`), RawKeys: []json.RawMessage{json.RawMessage(`"2"`)}}}},
		{"uuid keys stay strings", `{"event":"t.items.create","payload":{},"key":"0b5c4a6e-1f4c-4a54-9a3e-6b3a0a6b8f10","collection":"t"}`,
			[]broker.Event{{Action: "create", Collection: "t", Keys: []string{"0b5c4a6e-1f4c-4a54-9a3e-6b3a0a6b8f10"}, Payload: json.RawMessage(`{}`)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeWebhook([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(tt.want)
			if !bytes.Equal(gj, wj) {
				t.Errorf("got  %s\nwant %s", gj, wj)
			}
		})
	}
}

func TestNormalizeRejects(t *testing.T) {
	tests := []struct {
		name, body string
		malformed  bool
		reason     string
	}{
		{"not JSON", `{"event":`, true, ""},
		{"empty body", ``, true, ""},
		{"a string", `"hello"`, false, "not a JSON object"},
		{"empty array", `[]`, false, "empty array"},
		{"no event or action", `{"payload":{}}`, false, "neither"},
		{"not an item event", `{"event":"files.upload","payload":{}}`, false, "not an item event"},
		{"access event without keys", `{"event":"users.create","payload":{"password":"p"}}`, false, "without \"key\""},
		{"unknown item action", `{"event":"test.items.sort","keys":[1]}`, false, "not create, update or delete"},
		{"event and collection disagree", `{"event":"a.items.create","collection":"b","key":1}`, false, "does not match"},
		{"collection with a path", `{"action":"create","collection":"../users","keys":[1]}`, false, "only letters"},
		{"no keys", `{"event":"test.items.update","payload":{},"collection":"test"}`, false, "without"},
		{"key is an object", `{"event":"test.items.create","key":{"a":1},"collection":"test"}`, false, "keys must be"},
		{"update payload not an object", `{"event":"test.items.update","payload":[1],"keys":[1],"collection":"test"}`, false, "changed fields"},
		{"event not a string: the broker's words, not Go's", `{"event":5,"keys":[1]}`, false, `"event" must be a string`},
		{"keys not an array", `{"event":"a.items.update","keys":{"x":1},"payload":{}}`, false, `"keys" must be an array`},
		{"one bad event rejects the batch", `[{"action":"create","collection":"a","keys":[1]},{"action":"nope","collection":"a","keys":[1]}]`, false, "event 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeWebhook([]byte(tt.body))
			if err == nil {
				t.Fatalf("accepted: %+v", got)
			}
			var ne *NotEventError
			switch {
			case tt.malformed && !errors.Is(err, ErrMalformed):
				t.Fatalf("want ErrMalformed, got %v", err)
			case !tt.malformed && !errors.As(err, &ne):
				t.Fatalf("want NotEventError, got %v", err)
			case !tt.malformed && !strings.Contains(ne.Reason, tt.reason):
				t.Fatalf("reason %q does not mention %q", ne.Reason, tt.reason)
			case !tt.malformed && (strings.Contains(ne.Reason, "Go ") || strings.Contains(ne.Reason, "webhookBody")):
				t.Fatalf("reason %q shows decoder internals", ne.Reason)
			}
		})
	}
}

// FuzzNormalizeWebhook checks the normalizer never panics and that whatever
// it accepts is a valid event with string keys.
func FuzzNormalizeWebhook(f *testing.F) {
	f.Add([]byte(`{"event":"test.items.create","payload":{"a":1},"key":4,"collection":"test"}`))
	f.Add([]byte(`[{"action":"delete","keys":["1"],"collection":"x"}]`))
	f.Add([]byte(`{"event":"items.update","payload":{},"keys":[1,2],"collection":"t"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := NormalizeWebhook(body)
		if err != nil {
			return
		}
		for _, e := range events {
			if err := e.Validate(); err != nil {
				t.Fatalf("accepted invalid event %+v: %v", e, err)
			}
			if len(e.Keys) == 0 {
				t.Fatalf("accepted event without keys: %+v", e)
			}
		}
	})
}

// TestNormalizeAccessEvents runs the bodies a real Directus 11.17.4 Flow
// sent for changes of users, roles, policies, access rows and permissions
// (the Flow lists those system collections): each becomes an event of the
// system collection with its keys and no payload — users.create carries the
// password and the token in the clear, which must go no further.
func TestNormalizeAccessEvents(t *testing.T) {
	f, err := os.Open("testdata/directus-11.17.4-access-event-bodies.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var got []broker.Event
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Body json.RawMessage `json:"body"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		events, err := NormalizeWebhook(line.Body)
		if err != nil {
			t.Fatalf("%s: %v", line.Body, err)
		}
		for _, e := range events {
			if e.Payload != nil {
				t.Fatalf("%s kept a payload: %s", e.Collection, e.Payload)
			}
		}
		got = append(got, events...)
	}
	out, _ := json.Marshal(got)
	if bytes.Contains(out, []byte("pw123456")) || bytes.Contains(out, []byte("u1tok")) {
		t.Fatalf("a password or token survived: %s", out)
	}
	golden(t, "access-11.17.4.golden.json", got)
}
