package handlers_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
)

// TestResumeAfterDelete: a client that saw an item, missed its update and
// its deletion, and resumes with since, learns of the deletion (the update
// reads as nothing once the item is gone; that must not hide the delete).
func TestResumeAfterDelete(t *testing.T) {
	b := brokertest.Start(t, brokerConfig(t))
	c := brokertest.Dial(t, b.WSURL, fieldsToken)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "s"})
	c.NextOfType(t, "SUBSCRIBED")
	id := createItem(t, "articles", map[string]any{"title": "resume", "status": "published"})
	postWebhook(t, b, flowBody("create", id, `{"title":"resume"}`))
	seen := c.NextOfType(t, "SUBSCRIPTION")
	c.Conn.Close()

	if _, err := dx.Do(t.Context(), adminToken, http.MethodPatch, fmt.Sprintf("/items/articles/%v", id), map[string]any{"title": "resume2"}, nil); err != nil {
		t.Fatal(err)
	}
	postWebhook(t, b, flowBody("update", id, `{"title":"resume2"}`))
	if _, err := dx.Do(t.Context(), adminToken, http.MethodDelete, fmt.Sprintf("/items/articles/%v", id), nil, nil); err != nil {
		t.Fatal(err)
	}
	postWebhook(t, b, flowBody("delete", id, fmt.Sprintf(`["%v"]`, id)))
	b.Settle(t)

	c = brokertest.Dial(t, b.WSURL, fieldsToken)
	c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "s", "since": seen["id"]})
	c.NextOfType(t, "SUBSCRIBED")
	f := c.Next(t)
	if f["action"] != "delete" || fmt.Sprint(f["keys"]) != fmt.Sprintf("[%v]", id) {
		t.Fatalf("want the missed delete, got %v", f)
	}
	c.Quiet(t, "after-resume")
}
