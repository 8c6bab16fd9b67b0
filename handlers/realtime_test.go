package handlers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// Tests of Directus's own realtime protocol at realtime_path. The same
// protocol is also tested with the official SDK, against the broker and
// against Directus itself, by scripts/sdk-test.sh (e2e/sdk).

func rtURL(b *brokertest.Broker) string {
	return "ws" + strings.TrimPrefix(b.URL, "http") + b.Config.RealtimePath
}

// rtDial connects to the realtime endpoint, with token at the upgrade
// unless it is empty.
func rtDial(t *testing.T, b *brokertest.Broker, token string) *brokertest.Client {
	t.Helper()
	return brokertest.Dial(t, rtURL(b), token)
}

// rtAuth sends a handshake auth and checks that the very first frame the
// server sends is its success.
func rtAuth(t *testing.T, c *brokertest.Client, token string) {
	t.Helper()
	c.Send(t, map[string]any{"type": "auth", "access_token": token})
	if f := c.Next(t); f["type"] != "auth" || f["status"] != "ok" {
		t.Fatalf("want auth ok first, got %v", f)
	}
}

// rtQuiet asserts that nothing arrives before the pong of a ping with a
// fresh uid: the connection answers its frames in order.
func rtQuiet(t *testing.T, c *brokertest.Client, marker string) {
	t.Helper()
	c.Send(t, map[string]any{"type": "ping", "uid": marker})
	if f := c.Next(t); f["type"] != "pong" || f["uid"] != marker {
		t.Fatalf("expected nothing before the pong %s, got %v", marker, f)
	}
}

// rtSubscribe subscribes and returns the init frame.
func rtSubscribe(t *testing.T, c *brokertest.Client, m map[string]any) map[string]any {
	t.Helper()
	m["type"] = "subscribe"
	if m["collection"] == nil {
		m["collection"] = "articles"
	}
	f := c.Request(t, m)
	if f["type"] != "subscription" || f["event"] != "init" {
		t.Fatalf("subscribe %v: %v", m, f)
	}
	return f
}

func wantError(t *testing.T, f map[string]any, typ, code string) {
	t.Helper()
	e, _ := f["error"].(map[string]any)
	if f["type"] != typ || f["status"] != "error" || e["code"] != code || e["message"] == "" {
		t.Fatalf("want a %s error %s, got %v", typ, code, f)
	}
}

func titles(data any) []string {
	var out []string
	items, _ := data.([]any)
	for _, it := range items {
		out = append(out, fmt.Sprint(it.(map[string]any)["title"]))
	}
	return out
}

func TestRealtimeHandshake(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.RealtimeAuthTimeout = 700 * time.Millisecond
	b := brokertest.Start(t, cfg)
	// A short heartbeat, for the timeout case only: no ping may come while
	// the handshake is pending. The other cases keep the default period,
	// since a client that does not answer pings is closed after one period
	// of silence, which a slow Directus read could exceed.
	quickCfg := cfg
	quickCfg.PingPeriod = 100 * time.Millisecond
	quickCfg.PongWait = 15 * time.Second
	quick := brokertest.Start(t, quickCfg)

	t.Run("static token", func(t *testing.T) {
		c := rtDial(t, b, "")
		c.Send(t, map[string]any{"type": "auth", "access_token": adminToken, "uid": "a1"})
		if f := c.Next(t); f["type"] != "auth" || f["status"] != "ok" || f["uid"] != "a1" || f["refresh_token"] != nil {
			t.Fatalf("want auth ok with uid first, got %v", f)
		}
		rtSubscribe(t, c, map[string]any{"uid": "s", "query": map[string]any{"limit": 1}})
	})
	t.Run("login and refresh", func(t *testing.T) {
		c := rtDial(t, b, "")
		c.Send(t, map[string]any{"type": "auth", "email": "admin@example.com", "password": "admin-password"})
		f := c.Next(t)
		refresh, _ := f["refresh_token"].(string)
		if f["type"] != "auth" || f["status"] != "ok" || refresh == "" || f["access_token"] != nil {
			t.Fatalf("want auth ok with a refresh_token, got %v", f)
		}
		rtSubscribe(t, c, map[string]any{"uid": "s", "query": map[string]any{"limit": 1}})
		// The refresh token renews the session on the same socket.
		c.Send(t, map[string]any{"type": "auth", "refresh_token": refresh, "uid": 9})
		f = c.NextOfType(t, "auth")
		if f["status"] != "ok" || f["uid"] != float64(9) || f["refresh_token"] == refresh || f["refresh_token"] == nil {
			t.Fatalf("want a new refresh_token, got %v", f)
		}
		// The old one is spent.
		c.Send(t, map[string]any{"type": "auth", "refresh_token": refresh, "uid": 10})
		wantError(t, c.NextOfType(t, "auth"), "auth", "AUTH_FAILED")
		if err := c.Closed(t); !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
			t.Fatalf("want a close without status (1005, as Directus) after a failed auth in handshake mode, got %v", err)
		}
	})
	t.Run("refused token", func(t *testing.T) {
		c := rtDial(t, b, "")
		c.Send(t, map[string]any{"type": "auth", "access_token": "not-a-token", "uid": "a"})
		f := c.Next(t)
		wantError(t, f, "auth", "AUTH_FAILED")
		if f["uid"] != nil {
			t.Fatalf("Directus's handshake failure carries no uid: %v", f)
		}
		if err := c.Closed(t); !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
			t.Fatalf("want close 1005 (no status, as Directus), got %v", err)
		}
	})
	// Directus answers a handshake that fails in any way with the same
	// frame and closes without a status code.
	t.Run("first frame not auth", func(t *testing.T) {
		c := rtDial(t, b, "")
		c.Send(t, map[string]any{"type": "subscribe", "collection": "articles"})
		f := c.Next(t)
		if raw, _ := json.Marshal(f); string(raw) != `{"error":{"code":"AUTH_FAILED","message":"Authentication handshake failed."},"status":"error","type":"auth"}` {
			t.Fatalf("got %s", raw)
		}
		if err := c.Closed(t); !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
			t.Fatalf("want close 1005, got %v", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		c := rtDial(t, quick, "")
		start := time.Now()
		f := c.Next(t)
		if raw, _ := json.Marshal(f); string(raw) != `{"error":{"code":"AUTH_FAILED","message":"Authentication handshake failed."},"status":"error","type":"auth"}` {
			t.Fatalf("got %s", raw)
		}
		if d := time.Since(start); d < 500*time.Millisecond || d > 5*time.Second {
			t.Fatalf("timed out after %s, want about 700ms", d)
		}
		if err := c.Closed(t); !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
			t.Fatalf("want close 1005, got %v", err)
		}
	})
	t.Run("token at the upgrade", func(t *testing.T) {
		c := rtDial(t, b, adminToken)
		rtSubscribe(t, c, map[string]any{"uid": "s", "query": map[string]any{"limit": 1}})
		c.Send(t, map[string]any{"type": "auth", "access_token": adminToken, "uid": "again"})
		if f := c.NextOfType(t, "auth"); f["status"] != "ok" || f["uid"] != "again" {
			t.Fatalf("re-auth: %v", f)
		}
	})
	t.Run("upgrade with a refused token", func(t *testing.T) {
		_, resp, err := brokertest.DialE(rtURL(b)+"?access_token=nope", "", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("want 401, got %v %v", resp, err)
		}
	})
}

func TestRealtimeAuthModes(t *testing.T) {
	strictCfg := brokerConfig(t)
	strictCfg.RealtimeAuthMode = "strict"
	strict := brokertest.Start(t, strictCfg)
	publicCfg := brokerConfig(t)
	publicCfg.RealtimeAuthMode = "public"
	public := brokertest.Start(t, publicCfg)

	if _, resp, err := brokertest.DialE(rtURL(strict), "", nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("strict without a token: want 401, got %v", err)
	}
	c := rtDial(t, strict, pubToken)
	rtSubscribe(t, c, map[string]any{"uid": "s", "query": map[string]any{"limit": 1}})

	createItem(t, "articles", map[string]any{"title": "modes-pub", "status": "published", "secret": "x"})
	createItem(t, "articles", map[string]any{"title": "modes-draft", "status": "draft", "secret": "x"})
	anon := rtDial(t, public, "")
	f := rtSubscribe(t, anon, map[string]any{"uid": "p", "query": map[string]any{"filter": map[string]any{"title": map[string]any{"_starts_with": "modes-"}}}})
	data := f["data"].([]any)
	if len(data) != 1 || data[0].(map[string]any)["title"] != "modes-pub" || data[0].(map[string]any)["secret"] != nil {
		t.Fatalf("public role's init must hold only the published title: %v", data)
	}
	// A failed auth in public mode leaves the connection open as public.
	anon.Send(t, map[string]any{"type": "auth", "access_token": "nope", "uid": "a"})
	wantError(t, anon.Next(t), "auth", "AUTH_FAILED")
	rtQuiet(t, anon, "still-open")
	rtAuth(t, anon, adminToken)
}

func TestRealtimeFrames(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := rtDial(t, b, adminToken)
	c.Send(t, "not json")
	wantError(t, c.Next(t), "server", "INVALID_PAYLOAD")
	c.Send(t, map[string]any{"uid": "x"})
	wantError(t, c.Next(t), "server", "INVALID_PAYLOAD")
	c.Send(t, map[string]any{"type": "ping", "uid": map[string]any{"a": 1}})
	wantError(t, c.Next(t), "server", "INVALID_PAYLOAD")
	c.Send(t, map[string]any{"type": "something-else", "uid": "u"})
	c.Send(t, map[string]any{"type": "pong"})
	c.Send(t, map[string]any{"type": "ping", "uid": 5})
	if f := c.Next(t); f["type"] != "pong" || f["uid"] != float64(5) {
		t.Fatalf("unknown types get no answer, ping a pong with the uid as sent: %v", f)
	}
	c.Send(t, map[string]any{"type": "ping"})
	if f := c.Next(t); f["type"] != "pong" || len(f) != 1 {
		t.Fatalf("want a bare pong, got %v", f)
	}
	for _, m := range []map[string]any{
		{"type": "subscribe", "uid": "e1"},
		{"type": "subscribe", "collection": "articles", "event": "upsert", "uid": "e2"},
		{"type": "subscribe", "collection": "articles", "query": "fields=id", "uid": "e3"},
		{"type": "subscribe", "collection": "articles", "query": map[string]any{"filter": "{bad"}, "uid": "e4"},
	} {
		wantError(t, c.Request(t, m), "subscribe", "INVALID_PAYLOAD")
	}
	wantError(t, c.Request(t, map[string]any{"type": "subscribe", "collection": "directus_users", "uid": "e5"}), "subscribe", "INVALID_COLLECTION")
	wantError(t, c.Request(t, map[string]any{"type": "subscribe", "collection": "../x", "uid": "e6"}), "subscribe", "INVALID_COLLECTION")
	wantError(t, c.Request(t, map[string]any{"type": "subscribe", "collection": "private", "uid": "e7", "query": map[string]any{"fields": "nope"}}), "subscribe", "FORBIDDEN")
}

// TestRealtimeSubscribe: the SDK's query form, init, create/update/delete
// with event ids, event filters, uid replacement, unsubscribe, resume.
func TestRealtimeSubscribe(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := rtDial(t, b, adminToken)
	createItem(t, "articles", map[string]any{"title": "rt-sub-1", "status": "draft"})
	createItem(t, "articles", map[string]any{"title": "rt-sub-2", "status": "draft"})

	sdkQuery := map[string]any{"fields": "id,title", "filter": `{"title":{"_starts_with":"rt-sub-"}}`, "sort": "id", "limit": "10"}
	f := rtSubscribe(t, c, map[string]any{"uid": "s", "query": sdkQuery, "event_ids": true})
	if got := titles(f["data"]); fmt.Sprint(got) != "[rt-sub-1 rt-sub-2]" || len(f["data"].([]any)[0].(map[string]any)) != 2 {
		t.Fatalf("init shaped by the SDK-form query: %v", f)
	}
	if f := rtSubscribe(t, c, map[string]any{"uid": "creates", "event": "create"}); f["data"] != nil {
		t.Fatalf("with an event filter init carries no data: %v", f)
	}
	if f := rtSubscribe(t, c, map[string]any{"uid": 7, "query": map[string]any{"fields": []string{"id"}, "limit": 0}}); f["uid"] != "7" {
		t.Fatalf("a numeric uid comes back as a string, as Directus sends it: %v", f)
	}

	id := createItem(t, "articles", map[string]any{"title": "rt-sub-3", "status": "draft"})
	postWebhook(t, b, flowBody("create", id, `{"title":"rt-sub-3","status":"draft"}`))
	b.Settle(t)
	got := map[any]map[string]any{}
	for range 3 {
		f := c.Next(t)
		got[f["uid"]] = f
	}
	create := got["s"]
	if create["event"] != "create" || fmt.Sprint(titles(create["data"])) != "[rt-sub-3]" || create["event_id"] == nil {
		t.Fatalf("create for s (asked for event ids): %v", create)
	}
	if got["creates"]["event"] != "create" || got["7"]["event"] != "create" || got["7"]["event_id"] != nil {
		t.Fatalf("creates and 7 (no event_id unless asked for): %v", got)
	}
	rtQuiet(t, c, "q1")

	_, _ = dx.Do(t.Context(), adminToken, http.MethodPatch, fmt.Sprintf("/items/articles/%v", id), map[string]any{"title": "rt-sub-3b"}, nil)
	postWebhook(t, b, flowBody("update", id, `{"title":"rt-sub-3b"}`))
	b.Settle(t)
	got = map[any]map[string]any{}
	for range 2 {
		f := c.Next(t)
		got[f["uid"]] = f
	}
	update := got["s"]
	if update["event"] != "update" || fmt.Sprint(titles(update["data"])) != "[rt-sub-3b]" || got["7"]["event"] != "update" {
		t.Fatalf("updates for s and 7 only: %v", got)
	}
	rtQuiet(t, c, "q2")

	// The same uid again replaces the subscription (the SDK re-sends its
	// subscriptions after a reconnect, sometimes twice): one event, shaped
	// by the newest query.
	rtSubscribe(t, c, map[string]any{"uid": "s", "query": map[string]any{"fields": "id"}})
	rtSubscribe(t, c, map[string]any{"uid": "s", "query": map[string]any{"fields": "id,status"}})
	if f := c.Request(t, map[string]any{"type": "unsubscribe", "uid": 7}); f["type"] != "subscription" || f["event"] != "unsubscribe" || f["uid"] != float64(7) {
		t.Fatalf("unsubscribe: %v", f)
	}
	_, _ = dx.Do(t.Context(), adminToken, http.MethodDelete, fmt.Sprintf("/items/articles/%v", id), nil, nil)
	postWebhook(t, b, flowBody("delete", id, fmt.Sprintf(`["%v"]`, id)))
	b.Settle(t)
	del := c.Next(t)
	if del["uid"] != "s" || del["event"] != "delete" || fmt.Sprint(del["data"]) != fmt.Sprintf("[%v]", id) {
		t.Fatalf("want one delete for s, got %v", del)
	}
	rtQuiet(t, c, "q3")

	// Without a uid, unsubscribe removes everything.
	c.Send(t, map[string]any{"type": "unsubscribe"})
	if f := c.Next(t); f["event"] != "unsubscribe" || f["uid"] != nil {
		t.Fatalf("unsubscribe all: %v", f)
	}
	id2 := createItem(t, "articles", map[string]any{"title": "rt-sub-4"})
	postWebhook(t, b, flowBody("create", id2, `{"title":"rt-sub-4"}`))
	b.Settle(t)
	rtQuiet(t, c, "q4")

	// Resume: since replays what came after an event id, after an init
	// without data. (Replayed events are read now: the update of an item
	// deleted since would not be shown, so resume after it.)
	r := rtDial(t, b, adminToken)
	f = rtSubscribe(t, r, map[string]any{"uid": "resume", "since": update["event_id"], "query": map[string]any{"fields": "id,title"}})
	if f["data"] != nil {
		t.Fatalf("a resumed subscription's init carries no data: %v", f)
	}
	for _, want := range []string{"delete", "create"} {
		if f := r.Next(t); f["event"] != want || f["uid"] != "resume" {
			t.Fatalf("replay: want %s, got %v", want, f)
		}
	}
	rtQuiet(t, r, "q5")
}

// TestRealtimeItemSubscription: subscribe {"item"} gets that item's object.
func TestRealtimeItemSubscription(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := rtDial(t, b, adminToken)
	id := createItem(t, "articles", map[string]any{"title": "rt-item", "status": "draft"})
	other := createItem(t, "articles", map[string]any{"title": "rt-other"})
	f := rtSubscribe(t, c, map[string]any{"uid": "i", "item": id, "query": map[string]any{"fields": "id,title"}})
	if d, _ := f["data"].(map[string]any); d["title"] != "rt-item" || len(d) != 2 {
		t.Fatalf("init of an item subscription is the item: %v", f)
	}
	postWebhook(t, b, flowBody("update", other, `{"title":"rt-other"}`))
	postWebhook(t, b, flowBody("update", id, `{"title":"rt-item"}`))
	b.Settle(t)
	if f := c.Next(t); f["event"] != "update" || f["data"].(map[string]any)["title"] != "rt-item" {
		t.Fatalf("update of the item only: %v", f)
	}
	_, _ = dx.Do(t.Context(), adminToken, http.MethodDelete, fmt.Sprintf("/items/articles/%v", id), nil, nil)
	postWebhook(t, b, flowBody("delete", id, fmt.Sprintf(`["%v"]`, id)))
	b.Settle(t)
	if f := c.Next(t); f["event"] != "delete" || f["data"] != fmt.Sprint(id) {
		t.Fatalf("delete of the item carries its key: %v", f)
	}
	wantError(t, c.Request(t, map[string]any{"type": "subscribe", "collection": "articles", "item": 999999, "uid": "gone"}), "subscribe", "FORBIDDEN")
}

// TestRealtimeItems: items frames are forwarded to REST with the socket's
// token.
func TestRealtimeItems(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := rtDial(t, b, adminToken)
	req := func(m map[string]any) map[string]any {
		t.Helper()
		m["type"] = "items"
		if m["collection"] == nil {
			m["collection"] = "notes"
		}
		return c.Request(t, m)
	}
	f := req(map[string]any{"action": "create", "data": map[string]any{"title": "n1"}, "uid": "c1"})
	item, _ := f["data"].(map[string]any)
	if f["type"] != "items" || item["title"] != "n1" {
		t.Fatalf("create: %v", f)
	}
	id := item["id"]
	f = req(map[string]any{"action": "create", "data": []any{map[string]any{"title": "n2"}, map[string]any{"title": "n3"}}, "query": map[string]any{"fields": "id,title"}, "uid": "c2"})
	many, _ := f["data"].([]any)
	if len(many) != 2 {
		t.Fatalf("create many: %v", f)
	}
	id2, id3 := many[0].(map[string]any)["id"], many[1].(map[string]any)["id"]
	if f := req(map[string]any{"action": "read", "id": id, "query": map[string]any{"fields": []string{"title"}}, "uid": "r1"}); fmt.Sprint(f["data"]) != "map[title:n1]" {
		t.Fatalf("read one: %v", f)
	}
	if f := req(map[string]any{"action": "read", "ids": []any{id3, 999999, id}, "query": map[string]any{"fields": "title"}, "uid": "r2"}); fmt.Sprint(f["data"]) != "[map[title:n3] map[title:n1]]" {
		t.Fatalf("read by keys, in their order, missing ones left out: %v", f)
	}
	f = req(map[string]any{"action": "read", "query": map[string]any{"filter": map[string]any{"title": map[string]any{"_in": []string{"n1", "n2"}}}, "meta": "filter_count", "sort": "title"}, "uid": "r3"})
	if fmt.Sprint(titles(f["data"])) != "[n1 n2]" || fmt.Sprint(f["meta"]) != "map[filter_count:2]" {
		t.Fatalf("read by query with meta: %v", f)
	}
	if f := req(map[string]any{"action": "update", "id": id, "data": map[string]any{"title": "n1b"}, "uid": "u1"}); f["data"].(map[string]any)["title"] != "n1b" {
		t.Fatalf("update one: %v", f)
	}
	if f := req(map[string]any{"action": "update", "ids": []any{id2, id3}, "data": map[string]any{"status": "x"}, "uid": "u2"}); len(f["data"].([]any)) != 2 {
		t.Fatalf("update many: %v", f)
	}
	if f := req(map[string]any{"action": "update", "data": map[string]any{"status": "y"}, "query": map[string]any{"filter": map[string]any{"title": map[string]any{"_in": []string{"n2", "n3"}}}}, "uid": "u3"}); len(f["data"].([]any)) != 2 {
		t.Fatalf("update by query: %v", f)
	}
	if f := req(map[string]any{"action": "delete", "id": id, "uid": "d1"}); f["data"] != id {
		t.Fatalf("delete one answers its id: %v", f)
	}
	if f := req(map[string]any{"action": "delete", "ids": []any{id2}, "uid": "d2"}); fmt.Sprint(f["data"]) != fmt.Sprintf("[%v]", id2) {
		t.Fatalf("delete many answers the ids: %v", f)
	}
	if f := req(map[string]any{"action": "delete", "query": map[string]any{"filter": map[string]any{"status": map[string]any{"_eq": "y"}}}, "uid": "d3"}); f["status"] == "error" {
		t.Fatalf("delete by query: %v", f)
	}
	if f := req(map[string]any{"action": "read", "ids": []any{id3}, "uid": "r4"}); fmt.Sprint(f["data"]) != "[]" {
		t.Fatalf("deleted by query: %v", f)
	}

	f = req(map[string]any{"action": "read", "collection": "directus_users", "uid": "e1"})
	wantError(t, f, "items", "INVALID_COLLECTION")
	wantError(t, req(map[string]any{"action": "upsert", "uid": "e2"}), "items", "INVALID_PAYLOAD")
	wantError(t, req(map[string]any{"action": "delete", "uid": "e3"}), "items", "INVALID_PAYLOAD")
	wantError(t, req(map[string]any{"action": "create", "uid": "e4"}), "items", "INVALID_PAYLOAD")
	// The socket's token is used: this role may not write.
	p := rtDial(t, b, pubToken)
	p.Send(t, map[string]any{"type": "items", "action": "create", "collection": "articles", "data": map[string]any{"title": "no"}, "uid": "e5"})
	wantError(t, p.Next(t), "items", "FORBIDDEN")
}

// TestRealtimePermissions: each token gets what it may read.
func TestRealtimePermissions(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	conns := map[string]*brokertest.Client{}
	for name, token := range map[string]string{"admin": adminToken, "fields": fieldsToken, "pub": pubToken} {
		conns[name] = rtDial(t, b, token)
		rtSubscribe(t, conns[name], map[string]any{"uid": name, "query": map[string]any{"filter": map[string]any{"title": map[string]any{"_eq": "rt-perm"}}}})
	}
	id := createItem(t, "articles", map[string]any{"title": "rt-perm", "status": "draft", "secret": topSecret})
	postWebhook(t, b, flowBody("create", id, `{"title":"rt-perm","status":"draft"}`))
	b.Settle(t)
	admin := conns["admin"].Next(t)["data"].([]any)[0].(map[string]any)
	fields := conns["fields"].Next(t)["data"].([]any)[0].(map[string]any)
	if admin["secret"] != topSecret || fields["secret"] != nil || fields["title"] != "rt-perm" {
		t.Fatalf("admin %v, fields %v", admin, fields)
	}
	rtQuiet(t, conns["pub"], "draft-hidden")

	_, _ = dx.Do(t.Context(), adminToken, http.MethodDelete, fmt.Sprintf("/items/articles/%v", id), nil, nil)
	postWebhook(t, b, flowBody("delete", id, fmt.Sprintf(`["%v"]`, id)))
	b.Settle(t)
	conns["admin"].Next(t)
	conns["fields"].Next(t)
	// Directus would tell this role the key of an item it never saw.
	rtQuiet(t, conns["pub"], "delete-hidden")
}

// TestRealtimeReauth: an auth frame switches the connection and all its
// subscriptions to the new token (Broker.Rebind); its answer comes before
// the answers to later frames.
func TestRealtimeReauth(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := rtDial(t, b, "")
	rtAuth(t, c, pubToken)
	rtSubscribe(t, c, map[string]any{"uid": "s", "query": map[string]any{"filter": map[string]any{"title": map[string]any{"_starts_with": "rt-reauth"}}}})
	id := createItem(t, "articles", map[string]any{"title": "rt-reauth-1", "status": "draft"})
	postWebhook(t, b, flowBody("create", id, `{"title":"rt-reauth-1"}`))
	b.Settle(t)
	rtQuiet(t, c, "hidden")

	c.Send(t, map[string]any{"type": "auth", "access_token": adminToken, "uid": "a"})
	c.Send(t, map[string]any{"type": "ping", "uid": "after"})
	if f := c.Next(t); f["type"] != "auth" || f["status"] != "ok" {
		t.Fatalf("want the auth answer first, got %v", f)
	}
	if f := c.Next(t); f["type"] != "pong" {
		t.Fatalf("then the pong, got %v", f)
	}
	id = createItem(t, "articles", map[string]any{"title": "rt-reauth-2", "status": "draft"})
	postWebhook(t, b, flowBody("create", id, `{"title":"rt-reauth-2"}`))
	b.Settle(t)
	if f := c.Next(t); f["uid"] != "s" || fmt.Sprint(titles(f["data"])) != "[rt-reauth-2]" {
		t.Fatalf("the subscription reads with the new token: %v", f)
	}
}

// TestRealtimeTokenRevoked: a token Directus stops accepting is reported
// with TOKEN_EXPIRED (and the missed event with a notice); a new token in
// time continues the subscriptions, no token closes after
// realtime_auth_timeout with AUTH_TIMEOUT.
func TestRealtimeTokenRevoked(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.RealtimeAuthTimeout = time.Second
	b := brokertest.Start(t, cfg)
	ctx := t.Context()
	role, err := dx.CreateRoleWithReadPolicy(ctx, "rt-revoke", "articles", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{}
	conns := map[string]*brokertest.Client{}
	for _, name := range []string{"renewing", "lapsing"} {
		if users[name], err = dx.CreateUser(ctx, "rt-"+name+"@example.com", "rt-"+name+"-1", role); err != nil {
			t.Fatal(err)
		}
		conns[name] = rtDial(t, b, "rt-"+name+"-1")
		rtSubscribe(t, conns[name], map[string]any{"uid": "s", "query": map[string]any{"filter": map[string]any{"title": map[string]any{"_starts_with": "rt-revoke"}}}})
		if _, err := dx.Do(ctx, adminToken, http.MethodPatch, "/users/"+users[name], map[string]any{"token": "rt-" + name + "-2"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	id := createItem(t, "articles", map[string]any{"title": "rt-revoke-1"})
	postWebhook(t, b, flowBody("create", id, `{"title":"rt-revoke-1"}`))
	b.Settle(t)
	for name, c := range conns {
		n := c.Next(t)
		if n["type"] != "notice" || n["code"] != "EVENTS_MISSED" || n["uid"] != "s" || n["event_id"] == nil {
			t.Fatalf("%s: want a notice of the missed event, got %v", name, n)
		}
		wantError(t, c.Next(t), "auth", "TOKEN_EXPIRED")
	}
	r := conns["renewing"]
	r.Send(t, map[string]any{"type": "auth", "access_token": "rt-renewing-2", "uid": "renew"})
	if f := r.Next(t); f["type"] != "auth" || f["status"] != "ok" {
		t.Fatalf("renew: %v", f)
	}
	wantError(t, conns["lapsing"].Next(t), "auth", "AUTH_TIMEOUT")
	if err := conns["lapsing"].Closed(t); !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
		t.Fatalf("want close 1005 (as Directus), got %v", err)
	}
	id = createItem(t, "articles", map[string]any{"title": "rt-revoke-2"})
	postWebhook(t, b, flowBody("create", id, `{"title":"rt-revoke-2"}`))
	b.Settle(t)
	if f := r.Next(t); f["event"] != "create" || fmt.Sprint(titles(f["data"])) != "[rt-revoke-2]" {
		t.Fatalf("after renewal: %v", f)
	}
}

// TestRealtimeHeartbeat: {"type":"ping"} every ping_period; a client that
// answers stays, one that sends nothing for a whole period is closed.
func TestRealtimeHeartbeat(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.PingPeriod = 200 * time.Millisecond
	cfg.PongWait = 15 * time.Second
	b := brokertest.Start(t, cfg)
	c := rtDial(t, b, adminToken)
	for range 3 {
		if f := c.Next(t); f["type"] != "ping" || len(f) != 1 {
			t.Fatalf("want a ping, got %v", f)
		}
		c.Send(t, map[string]any{"type": "pong"})
	}
	start := time.Now()
	err := c.Closed(t)
	if !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) || time.Since(start) > 2*time.Second {
		t.Fatalf("want a close without status (as Directus) within two periods of silence, got %v after %s", err, time.Since(start))
	}
}

// TestRealtimeShutdown: both endpoints' sockets are closed with 1001.
func TestRealtimeShutdown(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := rtDial(t, b, adminToken)
	rtSubscribe(t, c, map[string]any{"uid": "s", "query": map[string]any{"limit": 1}})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Stop() }()
	if err := c.Closed(t); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("want 1001, got %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("broker did not stop")
	}
}
