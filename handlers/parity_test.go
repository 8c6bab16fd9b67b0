package handlers_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// rawWS is a WebSocket client that keeps frames as bytes (answering
// Directus's heartbeat pings).
type rawWS struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialRaw(t *testing.T, url string) *rawWS {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { ws.Close() })
	return &rawWS{t: t, ws: ws}
}

func (c *rawWS) send(v any) {
	c.t.Helper()
	if err := c.ws.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

// next is the next frame that is not a heartbeat ping.
func (c *rawWS) next() string {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(brokertest.DefaultWait))
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if string(msg) == `{"type":"ping"}` {
			_ = c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"pong"}`))
			continue
		}
		return string(msg)
	}
}

// TestRealtimeFramesEqualDirectus: the broker's /realtime sends, byte for
// byte, the frames Directus's own /websocket sends for the same
// subscription and the same writes — init, create, update, delete — and
// the same handshake failure. (The broker used to add "event_id" to every
// event frame, which broke strict comparisons in Directus's own tests.)
func TestRealtimeFramesEqualDirectus(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	const coll = "parity"
	if err := dx.CreateCollection(t.Context(), coll, directustest.Field{Name: "title"}, directustest.Field{Name: "status"}); err != nil {
		t.Fatal(err)
	}
	createItem(t, coll, map[string]any{"title": "first", "status": "draft"})
	dURL := "ws" + strings.TrimPrefix(dx.URL, "http") + "/websocket"
	clients := map[string]*rawWS{"directus": dialRaw(t, dURL), "broker": dialRaw(t, rtURL(b))}
	same := func(step string) {
		t.Helper()
		d, br := clients["directus"].next(), clients["broker"].next()
		if d != br {
			t.Fatalf("%s:\n directus %s\n broker   %s", step, d, br)
		}
	}
	for _, c := range clients {
		c.send(map[string]any{"type": "auth", "access_token": adminToken})
	}
	same("auth")
	for _, c := range clients {
		c.send(map[string]any{"type": "subscribe", "collection": coll, "uid": 1, "query": map[string]any{"fields": []string{"id", "title", "status"}, "sort": "id"}})
	}
	same("init")

	id := createItem(t, coll, map[string]any{"title": "second", "status": "draft"})
	postWebhook(t, b, fmt.Sprintf(`{"event":"%s.items.create","payload":{"title":"second","status":"draft"},"key":%v,"collection":"%s"}`, coll, id, coll))
	same("create")
	if _, err := dx.Do(t.Context(), adminToken, http.MethodPatch, fmt.Sprintf("/items/%s/%v", coll, id), map[string]any{"status": "published"}, nil); err != nil {
		t.Fatal(err)
	}
	postWebhook(t, b, fmt.Sprintf(`{"event":"%s.items.update","payload":{"status":"published"},"keys":["%v"],"collection":"%s"}`, coll, id, coll))
	same("update")
	if _, err := dx.Do(t.Context(), adminToken, http.MethodDelete, fmt.Sprintf("/items/%s/%v", coll, id), nil, nil); err != nil {
		t.Fatal(err)
	}
	postWebhook(t, b, fmt.Sprintf(`{"event":"%s.items.delete","payload":["%v"],"keys":["%v"],"collection":"%s"}`, coll, id, id, coll))
	same("delete")
	for _, c := range clients {
		c.send(map[string]any{"type": "unsubscribe", "uid": 1})
	}
	same("unsubscribe")

	// The handshake failure: the same frame, and a close without status.
	for name, url := range map[string]string{"directus": dURL, "broker": rtURL(b)} {
		c := dialRaw(t, url)
		c.send(map[string]any{"type": "ping"})
		if f := c.next(); f != `{"type":"auth","status":"error","error":{"code":"AUTH_FAILED","message":"Authentication handshake failed."}}` {
			t.Fatalf("%s: handshake failure %s", name, f)
		}
		_, _, err := c.ws.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
			t.Fatalf("%s: want a close without status, got %v", name, err)
		}
	}
}
