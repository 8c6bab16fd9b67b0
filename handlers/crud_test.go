package handlers_test

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// TestCRUDFrames drives every CRUD frame, single and batch, through a real
// Directus and checks the answers against what Directus holds.
func TestCRUDFrames(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := brokertest.Dial(t, b.WSURL, adminToken)

	// post: one item, then a batch.
	one := c.Request(t, map[string]any{"type": "post", "collection": "notes", "data": map[string]any{"title": "n1"}, "uid": "p1"})
	if one["type"] != "RESPONSE" || one["data"].(map[string]any)["title"] != "n1" {
		t.Fatalf("post: %v", one)
	}
	id1 := one["data"].(map[string]any)["id"]
	batch := c.Request(t, map[string]any{"type": "POST", "collection": "notes", "data": []any{map[string]any{"title": "n2"}, map[string]any{"title": "n3"}}, "uid": 2})
	items := batch["data"].([]any)
	if len(items) != 2 || items[1].(map[string]any)["title"] != "n3" {
		t.Fatalf("batch post: %v", batch)
	}
	id2, id3 := items[0].(map[string]any)["id"], items[1].(map[string]any)["id"]

	// get: a list with a query, and one item by id.
	list := c.Request(t, map[string]any{"type": "get", "collection": "notes", "query": map[string]any{"limit": 2, "sort": []string{"-id"}, "fields": []string{"id", "title"}}, "uid": "g1"})
	got := list["data"].([]any)
	if len(got) != 2 || got[0].(map[string]any)["title"] != "n3" || len(got[0].(map[string]any)) != 2 {
		t.Fatalf("get list: %v", list)
	}
	single := c.Request(t, map[string]any{"type": "Get", "collection": "notes", "id": id1, "uid": "g2"})
	if single["data"].(map[string]any)["title"] != "n1" {
		t.Fatalf("get one: %v", single)
	}
	filtered := c.Request(t, map[string]any{"type": "get", "collection": "notes", "query": map[string]any{"filter": map[string]any{"title": map[string]any{"_eq": "n2"}}, "aggregate": map[string]any{"count": "*"}}, "uid": "g3"})
	if fmt.Sprint(filtered["data"]) != "[map[count:1]]" {
		t.Fatalf("get with filter+aggregate: %v", filtered)
	}

	// patch: one, then a batch.
	p := c.Request(t, map[string]any{"type": "PATCH", "collection": "notes", "id": id1, "data": map[string]any{"title": "n1b"}, "uid": "u1"})
	if p["data"].(map[string]any)["title"] != "n1b" {
		t.Fatalf("patch: %v", p)
	}
	pb := c.Request(t, map[string]any{"type": "patch", "collection": "notes", "ids": []any{id2, id3}, "data": map[string]any{"status": "x"}, "uid": "u2"})
	if n := len(pb["data"].([]any)); n != 2 || pb["data"].([]any)[0].(map[string]any)["status"] != "x" {
		t.Fatalf("batch patch: %v", pb)
	}

	// delete: one, then a batch; the answer lists the ids.
	d := c.Request(t, map[string]any{"type": "DELETE", "collection": "notes", "id": id1, "uid": "d1"})
	if fmt.Sprint(d["data"]) != fmt.Sprint([]any{id1}) {
		t.Fatalf("delete: %v", d)
	}
	db := c.Request(t, map[string]any{"type": "delete", "collection": "notes", "ids": []any{id3, id2}, "uid": "d2"})
	if fmt.Sprint(db["data"]) != fmt.Sprint([]any{id3, id2}) {
		t.Fatalf("batch delete: %v", db)
	}
	left := c.Request(t, map[string]any{"type": "get", "collection": "notes", "query": map[string]any{"filter": map[string]any{"id": map[string]any{"_in": []any{id1, id2, id3}}}}, "uid": "g4"})
	if len(left["data"].([]any)) != 0 {
		t.Fatalf("items still there after delete: %v", left)
	}
}

// TestFrameErrors checks every error the broker answers itself, that uids
// are echoed verbatim, and that no bad frame closes the socket.
func TestFrameErrors(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.MaxFrameSize = 1024
	b := brokertest.Start(t, cfg)
	c := brokertest.Dial(t, b.WSURL, pubToken)

	cases := []struct {
		name   string
		frame  string
		status float64
		code   string
		uid    any
	}{
		{"malformed JSON", `{"type":"get",`, 400, "INVALID_PAYLOAD", nil},
		{"malformed JSON keeps a readable uid", `{"type":"get","uid":{"a":[1,2]},"collection":5}`, 400, "INVALID_PAYLOAD", map[string]any{"a": []any{1.0, 2.0}}},
		{"unknown type", `{"type":"explode","uid":"x1"}`, 400, "INVALID_PAYLOAD", "x1"},
		{"missing type", `{"collection":"articles","uid":7}`, 400, "INVALID_PAYLOAD", 7.0},
		{"missing collection", `{"type":"get","uid":"x2"}`, 400, "INVALID_PAYLOAD", "x2"},
		{"collection climbing out of /items", `{"type":"get","collection":"../users","uid":"x3"}`, 400, "INVALID_PAYLOAD", "x3"},
		{"collection with a slash", `{"type":"get","collection":"articles/1","uid":"x4"}`, 400, "INVALID_PAYLOAD", "x4"},
		{"id that is a dot segment", `{"type":"get","collection":"articles","id":"..","uid":"x5"}`, 400, "INVALID_PAYLOAD", "x5"},
		{"frame too large", `{"type":"get","collection":"articles","uid":"x6","pad":"` + strings.Repeat("a", 2000) + `"}`, 413, "FRAME_TOO_LARGE", "x6"},
		{"post without data", `{"type":"post","collection":"articles","uid":"x7"}`, 400, "INVALID_PAYLOAD", "x7"},
		{"Directus's own 403 passes through", `{"type":"get","collection":"private","uid":"x8"}`, 403, "FORBIDDEN", "x8"},
		{"Directus's own error for a write", `{"type":"post","collection":"articles","data":{"title":"x"},"uid":"x9"}`, 403, "FORBIDDEN", "x9"},
		{"unknown collection", `{"type":"get","collection":"nope","uid":"x10"}`, 403, "FORBIDDEN", "x10"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Send(t, tc.frame)
			f := c.Next(t)
			if f["type"] != "ERROR" {
				t.Fatalf("want ERROR, got %v", f)
			}
			data := f["data"].(map[string]any)
			if data["status"] != tc.status || data["code"] != tc.code || data["message"] == "" {
				t.Fatalf("want %v %s, got %v", tc.status, tc.code, f)
			}
			if fmt.Sprint(f["uid"]) != fmt.Sprint(tc.uid) {
				t.Fatalf("uid: want %v, got %v", tc.uid, f["uid"])
			}
		})
	}
	// Still open and working after every bad frame.
	ok := c.Request(t, map[string]any{"type": "get", "collection": "articles", "uid": "after"})
	if ok["type"] != "RESPONSE" {
		t.Fatalf("socket unusable after bad frames: %v", ok)
	}
}

// TestRateLimit: frames over the per-connection rate get 429 and are not
// executed; the socket stays open. Malformed frames count too (they used to
// be answered before the limit was checked, so a flood of them was never
// limited).
func TestRateLimit(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.RateLimit = 0.001 // effectively no refill during the test
	cfg.RateBurst = 3
	b := brokertest.Start(t, cfg)
	c := brokertest.Dial(t, b.WSURL, adminToken)
	for i := range 2 {
		c.Send(t, map[string]any{"type": "ping", "uid": i})
		if f := c.Next(t); f["type"] != "PONG" {
			t.Fatalf("frame %d within the burst: %v", i, f)
		}
	}
	c.Send(t, "not json")
	if f := c.Next(t); f["type"] != "ERROR" || f["data"].(map[string]any)["code"] != "INVALID_PAYLOAD" {
		t.Fatalf("malformed frame within the burst: %v", f)
	}
	c.Send(t, map[string]any{"type": "get", "collection": "articles", "uid": "over"})
	if f := c.Next(t); f["type"] != "ERROR" || f["data"].(map[string]any)["status"] != 429.0 {
		t.Fatalf("want 429, got %v", f)
	}
	// (Later frames over the rate are dropped, the answer repeated at most
	// once a second: TestRateLimitAnswersOncePerSecond.)
}

// TestFrameTypeSwitches: a disabled frame type is refused clearly.
func TestFrameTypeSwitches(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.WebsocketCorePost = false
	b := brokertest.Start(t, cfg)
	c := brokertest.Dial(t, b.WSURL, adminToken)
	f := c.Request(t, map[string]any{"type": "post", "collection": "notes", "data": map[string]any{"title": "no"}, "uid": 1})
	if f["type"] != "ERROR" || f["data"].(map[string]any)["status"] != 403.0 {
		t.Fatalf("want 403 for a disabled type, got %v", f)
	}
	var out struct{ Data []any }
	_, _ = dx.Do(t.Context(), adminToken, "GET", "/items/notes?filter[title][_eq]=no", nil, &out)
	if len(out.Data) != 0 {
		t.Fatalf("disabled post still created an item: %v", out.Data)
	}
}

// TestSingleton: get and patch without an id address a singleton.
func TestSingleton(t *testing.T) {
	cfg := brokerConfig(t)
	if err := dx.CreateCollectionMeta(t.Context(), "site", map[string]any{"singleton": true}, directustest.Field{Name: "title"}); err != nil {
		t.Fatal(err)
	}
	b := brokertest.Start(t, cfg)
	c := brokertest.Dial(t, b.WSURL, adminToken)
	p := c.Request(t, map[string]any{"type": "patch", "collection": "site", "data": map[string]any{"title": "My site"}, "uid": "p"})
	if p["type"] != "RESPONSE" || p["data"].(map[string]any)["title"] != "My site" {
		t.Fatalf("patch singleton: %v", p)
	}
	g := c.Request(t, map[string]any{"type": "get", "collection": "site", "uid": "g"})
	if g["type"] != "RESPONSE" || g["data"].(map[string]any)["title"] != "My site" {
		t.Fatalf("get singleton: %v", g)
	}
}

// TestHealthAndReadiness: /healthz answers while the process runs; /readyz
// only while Directus is reachable.
func TestHealthAndReadiness(t *testing.T) {
	up := brokertest.Start(t, brokerConfig(t))
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + ln.Addr().String()
	ln.Close()
	downCfg := brokerConfig(t)
	downCfg.DirectusURL = deadURL
	down := brokertest.Start(t, downCfg)
	for _, tc := range []struct {
		url  string
		want int
	}{{up.URL + "/healthz", 200}, {up.URL + "/readyz", 200}, {down.URL + "/healthz", 200}, {down.URL + "/readyz", 503}} {
		resp, err := http.Get(tc.url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.url, resp.StatusCode, tc.want)
		}
	}
}
