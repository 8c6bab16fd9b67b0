package handlers_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
	"github.com/directus-ws-broker/directus-ws-broker/internal/brokertest"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// TestTokenExpiry: a JWT that expires on an open socket is reported with
// TOKEN_EXPIRED; an auth frame with a new token continues the same
// subscriptions; without one the socket is closed with 4001. It needs its
// own Directus with 3-second access tokens.
func TestTokenExpiry(t *testing.T) {
	requireDirectus(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	short, err := directustest.Start(ctx, directustest.Options{Env: map[string]string{"ACCESS_TOKEN_TTL": "3s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Stop()
	if err := short.CreateCollection(ctx, "articles", directustest.Field{Name: "title"}); err != nil {
		t.Fatal(err)
	}
	login := func() string {
		var out struct {
			Data struct {
				AccessToken string `json:"access_token"`
			} `json:"data"`
		}
		if _, err := short.Do(ctx, "", http.MethodPost, "/auth/login", map[string]any{"email": "admin@example.com", "password": "admin-password"}, &out); err != nil {
			t.Fatal(err)
		}
		return out.Data.AccessToken
	}
	cfg := config.Default()
	cfg.DirectusURL = short.URL
	cfg.WebhookSecret = secret
	cfg.AuthGrace = 2 * time.Second
	b := brokertest.Start(t, cfg)

	renewing := brokertest.Dial(t, b.WSURL, login())
	lapsing := brokertest.Dial(t, b.WSURL, login())
	for _, c := range []*brokertest.Client{renewing, lapsing} {
		c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "s"})
		c.NextOfType(t, "SUBSCRIBED")
	}
	for _, c := range []*brokertest.Client{renewing, lapsing} {
		f := c.NextOfType(t, "ERROR")
		if f["data"].(map[string]any)["code"] != "TOKEN_EXPIRED" {
			t.Fatalf("want TOKEN_EXPIRED, got %v", f)
		}
	}
	if f := renewing.Request(t, map[string]any{"type": "auth", "access_token": login(), "uid": "a"}); f["type"] != "AUTH" || f["status"] != "ok" {
		t.Fatalf("auth: %v", f)
	}
	var item struct {
		Data map[string]any `json:"data"`
	}
	if _, err := short.Do(ctx, short.AdminToken, http.MethodPost, "/items/articles", map[string]any{"title": "after renewal"}, &item); err != nil {
		t.Fatal(err)
	}
	status, body, err := b.PostWebhook(fmt.Sprintf(`{"event":"articles.items.create","payload":{"title":"after renewal"},"key":%v,"collection":"articles"}`, item.Data["id"]))
	if err != nil || status != 202 {
		t.Fatalf("webhook: %d %s %v", status, body, err)
	}
	f := renewing.NextOfType(t, "SUBSCRIPTION")
	if f["uid"] != "s" || f["payload"].(map[string]any)["title"] != "after renewal" {
		t.Fatalf("subscription did not survive the renewal: %v", f)
	}
	err = lapsing.Closed(t)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4001 {
		t.Fatalf("want close 4001 after the grace period, got %v", err)
	}
}

// TestClassMemberJWTExpires: two users of one role share one read; when one
// user's JWT expires mid-stream, that subscriber is told what it misses
// (and never gets data read with the other's token), while the next event
// still reaches the other, correctly filtered.
func TestClassMemberJWTExpires(t *testing.T) {
	requireDirectus(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	short, err := directustest.Start(ctx, directustest.Options{Env: map[string]string{"ACCESS_TOKEN_TTL": "3s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Stop()
	if err := short.CreateCollection(ctx, "articles", directustest.Field{Name: "title"}, directustest.Field{Name: "secret"}); err != nil {
		t.Fatal(err)
	}
	if err := coverEverything(ctx, short); err != nil {
		t.Fatal(err)
	}
	role, err := short.CreateRoleWithReadPolicy(ctx, "readers", "articles", []string{"id", "title"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := short.CreateUser(ctx, "static@example.com", "static-token", role); err != nil {
		t.Fatal(err)
	}
	if _, err := short.CreateUser(ctx, "jwt@example.com", "", role); err != nil {
		t.Fatal(err)
	}
	var login struct {
		Data struct {
			AccessToken string `json:"access_token"`
		} `json:"data"`
	}
	if _, err := short.Do(ctx, "", http.MethodPost, "/auth/login", map[string]any{"email": "jwt@example.com", "password": directustest.UserPassword}, &login); err != nil {
		t.Fatal(err)
	}
	client, _ := directus.NewClient(short.URL, 10*time.Second)
	service, err := flow.EnsureServiceUser(ctx, client, short.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DirectusURL = short.URL
	cfg.WebhookSecret = secret
	cfg.DirectusServiceToken = service
	cfg.AuthGrace = time.Minute
	b := brokertest.Start(t, cfg)
	static := brokertest.Dial(t, b.WSURL, "static-token")
	jwt := brokertest.Dial(t, b.WSURL, login.Data.AccessToken)
	for _, c := range []*brokertest.Client{static, jwt} {
		c.Send(t, map[string]any{"type": "subscribe", "collection": "articles", "uid": "s"})
		c.NextOfType(t, "SUBSCRIBED")
	}
	if g := b.Broker.Metrics().Groups; g != 1 {
		t.Fatalf("%d groups: a user's JWT and another's static token of one role share one class", g)
	}
	if f := jwt.NextOfType(t, "ERROR"); f["data"].(map[string]any)["code"] != "TOKEN_EXPIRED" {
		t.Fatalf("want TOKEN_EXPIRED, got %v", f)
	}
	var item struct {
		Data map[string]any `json:"data"`
	}
	if _, err := short.Do(ctx, short.AdminToken, http.MethodPost, "/items/articles", map[string]any{"title": "after expiry", "secret": "s"}, &item); err != nil {
		t.Fatal(err)
	}
	reads := b.Broker.Metrics().Reads
	status, body, err := b.PostWebhook(fmt.Sprintf(`{"event":"articles.items.create","payload":{"title":"after expiry"},"key":%v,"collection":"articles"}`, item.Data["id"]))
	if err != nil || status != 202 {
		t.Fatalf("webhook: %d %s %v", status, body, err)
	}
	b.Settle(t)
	f := static.NextOfType(t, "SUBSCRIPTION")
	if data := f["data"].([]any)[0].(map[string]any); data["title"] != "after expiry" || data["secret"] != nil {
		t.Fatalf("static member: %v", f)
	}
	if n := b.Broker.Metrics().Reads - reads; n != 1 {
		t.Fatalf("%d reads: the expired member's token must not be read with", n)
	}
	g := jwt.Next(t)
	if g["type"] != "ERROR" || g["data"].(map[string]any)["code"] != "EVENTS_MISSED" {
		t.Fatalf("expired member: want EVENTS_MISSED, got %v", g)
	}
}
