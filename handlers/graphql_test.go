package handlers_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// gqlClient speaks graphql-transport-ws (the graphql-ws library's
// protocol) to the broker's graphql_path or Directus's own /graphql.
type gqlClient struct {
	t    *testing.T
	conn *websocket.Conn
}

func dialGQL(t *testing.T, url, token string) *gqlClient {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"graphql-transport-ws"}, HandshakeTimeout: 10 * time.Second}
	conn, resp, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if resp.Header.Get("Sec-WebSocket-Protocol") != "graphql-transport-ws" {
		t.Fatalf("%s chose subprotocol %q", url, resp.Header.Get("Sec-WebSocket-Protocol"))
	}
	c := &gqlClient{t: t, conn: conn}
	t.Cleanup(func() { _ = conn.Close() })
	c.send(map[string]any{"type": "connection_init", "payload": map[string]any{"access_token": token}})
	if f := c.next(); f["type"] != "connection_ack" {
		t.Fatalf("%s: connection_init answered %v", url, f)
	}
	return c
}

func (c *gqlClient) send(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *gqlClient) next() map[string]any {
	c.t.Helper()
	var f map[string]any
	if err := json.Unmarshal(c.raw(), &f); err != nil {
		c.t.Fatal(err)
	}
	return f
}

// raw is the next message as sent, byte for byte.
func (c *gqlClient) raw() []byte {
	c.t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, msg, err := c.conn.ReadMessage()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return msg
}

// quiet proves nothing more arrives before a pong: ping, then the next
// frame must be the pong.
func (c *gqlClient) quiet(marker string) {
	c.t.Helper()
	c.send(map[string]any{"type": "ping", "payload": map[string]any{"m": marker}})
	if f := c.next(); f["type"] != "pong" {
		c.t.Fatalf("unexpected frame %v", f)
	}
}

func (c *gqlClient) subscribe(id, query string) {
	c.send(map[string]any{"id": id, "type": "subscribe", "payload": map[string]any{"query": query}})
}

// TestGraphQLSubscriptionsAsDirectus: the same graphql-transport-ws
// subscriptions on the broker's graphql_path and on Directus 11.17.4's own
// /graphql, one run: the next messages of a create, an update and a
// delete are equal, message for message; a document naming a field the
// role may not read is refused on both; an item the role's rule hides
// reaches neither.
func TestGraphQLSubscriptionsAsDirectus(t *testing.T) {
	cfg := brokerConfig(t)
	cfg.DirectusServiceToken = requireServiceToken(t)
	cfg.GraphQLEnabled = true
	w := itemsWorld(t, "gql", "title", "status", "secret")
	role := w.role("readers")
	p := w.policy("published, no secret")
	w.read(p, []string{"id", "title", "status"}, map[string]any{"status": map[string]any{"_eq": "published"}})
	w.attachRole(role, p)
	_, token := w.user("reader", role)
	b := brokertest.Start(t, cfg)
	brokerURL := strings.Replace(b.URL, "http://", "ws://", 1) + cfg.GraphQLPath
	directusURL := strings.Replace(dx.URL, "http://", "ws://", 1) + "/graphql"
	doc := `subscription { gql_items_mutated { key event data { id title status } } }`
	clients := map[string]*gqlClient{"broker": dialGQL(t, brokerURL, token), "directus": dialGQL(t, directusURL, token)}
	for _, c := range clients {
		c.subscribe("s", doc)
		c.subscribe("bad", `subscription { gql_items_mutated { data { secret } } }`)
	}
	for name, c := range clients {
		f := c.next()
		errs, _ := f["payload"].([]any)
		if f["id"] != "bad" || f["type"] != "error" || len(errs) == 0 || !strings.Contains(fmt.Sprint(errs[0]), `Cannot query field "secret" on type "gql_items"`) {
			t.Fatalf("%s: a field the role may not read answered %v", name, f)
		}
	}
	// Directus registers a subscription asynchronously: a ping answered
	// means the subscribe before it was handled.
	for _, c := range clients {
		c.quiet("ready")
	}
	post := func(action, id string) {
		t.Helper()
		body := fmt.Sprintf(`{"event":"gql_items.items.%s","payload":{},"keys":["%s"],"collection":"gql_items"}`, action, id)
		if action == "delete" {
			body = fmt.Sprintf(`{"event":"gql_items.items.delete","payload":["%s"],"keys":["%s"],"collection":"gql_items"}`, id, id)
		}
		if status, out := postWebhook(t, b, body); status != http.StatusAccepted {
			t.Fatalf("webhook: %d %s", status, out)
		}
		b.Settle(t)
	}
	same := func(step string) {
		t.Helper()
		jb, jd := clients["broker"].raw(), clients["directus"].raw()
		if string(jb) != string(jd) {
			t.Fatalf("%s: broker sent\n %s\nDirectus sent\n %s", step, jb, jd)
		}
		t.Logf("%s: %s", step, jb)
	}
	id := w.item(map[string]any{"title": "one", "status": "published", "secret": "s1"})
	post("create", id)
	same("create")
	admin(t, http.MethodPatch, "/items/gql_items/"+id, map[string]any{"title": "one, edited"})
	post("update", id)
	same("update")
	hidden := w.item(map[string]any{"title": "draft", "status": "draft"})
	post("create", hidden)
	for _, c := range clients {
		c.quiet("hidden")
	}
	admin(t, http.MethodDelete, "/items/gql_items/"+id, nil)
	post("delete", id)
	same("delete")
}
