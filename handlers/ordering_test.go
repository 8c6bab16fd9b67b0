package handlers_test

import (
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// Frames that change a connection's state take effect in the order they
// were sent. Each case sends its frames back to back, without waiting for
// answers. (The extension protocol used to run subscribe and auth on goroutines
// of their own while unsubscribe and items requests did not wait for them:
// an immediate unsubscribe answered NOT_SUBSCRIBED and the subscription then
// lived on; a get right after an auth ran with the old token.)
func TestExtensionFramesTakeEffectInOrder(t *testing.T) {
	cfg := brokerConfig(t)
	b := brokertest.Start(t, cfg)

	t.Run("subscribe then unsubscribe", func(t *testing.T) {
		c := brokertest.Dial(t, b.WSURL, adminToken)
		c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "s"})
		c.Send(t, map[string]any{"type": "unsubscribe", "uid": "s"})
		if f := c.Next(t); f["type"] != "SUBSCRIBED" || f["uid"] != "s" {
			t.Fatalf("first answer %v", f)
		}
		if f := c.Next(t); f["type"] != "UNSUBSCRIBED" || f["uid"] != "s" {
			t.Fatalf("second answer %v, want UNSUBSCRIBED", f)
		}
		id := createItem(t, "articles", map[string]any{"title": "after unsubscribe", "status": "published"})
		if status, out := postWebhook(t, b, flowBody("create", id, `{"title":"after unsubscribe"}`)); status != 202 {
			t.Fatalf("webhook %d %s", status, out)
		}
		b.Settle(t)
		c.Quiet(t, "q1")
	})

	t.Run("auth then get", func(t *testing.T) {
		c := brokertest.Dial(t, b.WSURL, noneToken) // may not read articles
		c.Send(t, map[string]any{"type": "auth", "access_token": adminToken, "uid": "a"})
		c.Send(t, map[string]any{"type": "get", "collection": "articles", "query": map[string]any{"limit": 1}, "uid": "g"})
		if f := c.Next(t); f["type"] != "AUTH" || f["uid"] != "a" {
			t.Fatalf("first answer %v", f)
		}
		if f := c.Next(t); f["type"] != "RESPONSE" || f["uid"] != "g" {
			t.Fatalf("the get after the auth must run with the new token: %v", f)
		}
	})

	t.Run("two auths then get", func(t *testing.T) {
		c := brokertest.Dial(t, b.WSURL, adminToken)
		c.Send(t, map[string]any{"type": "auth", "access_token": fieldsToken, "uid": "a1"})
		c.Send(t, map[string]any{"type": "auth", "access_token": noneToken, "uid": "a2"})
		c.Send(t, map[string]any{"type": "get", "collection": "articles", "uid": "g"})
		for _, uid := range []string{"a1", "a2"} {
			if f := c.Next(t); f["type"] != "AUTH" || f["uid"] != uid {
				t.Fatalf("answer for %s: %v", uid, f)
			}
		}
		// The last token (none-token) reads no articles.
		if f := c.Next(t); f["type"] != "ERROR" || f["uid"] != "g" || f["data"].(map[string]any)["status"] != 403.0 {
			t.Fatalf("the get must run with the last token: %v", f)
		}
	})
}
