package handlers_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// dx is the real Directus (11.17.4: custom permissions work without a
// license) that every test of this package talks to. TestMain starts it with
// a fresh database and stops it, also when tests fail.
var dx *directustest.Instance

// Tokens of the fixture users; see setupFixture.
const (
	adminToken  = directustest.DefaultAdminToken
	fieldsToken = "fields-token" // reads articles without the field "secret"
	pubToken    = "pub-token"    // reads only articles with status "published"
	noneToken   = "none-token"   // reads nothing
	secret      = "test-webhook-secret"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if dx != nil {
		_ = dx.Stop()
	}
	os.Exit(code)
}

var (
	dxOnce sync.Once
	dxErr  error
)

// requireDirectus starts the shared Directus on first use (so unit tests and
// fuzzing in this package need none) and skips when DIRECTUS_TESTS=0.
func requireDirectus(t testing.TB) {
	t.Helper()
	dxOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		dx, dxErr = directustest.Start(ctx, directustest.Options{Version: "11.17.4", Env: map[string]string{"WEBSOCKETS_ENABLED": "true"}})
		if dxErr == nil {
			if dxErr = setupFixture(ctx); dxErr != nil {
				dxErr = fmt.Errorf("fixture: %w\n%s", dxErr, dx.Log())
			}
		}
	})
	if errors.Is(dxErr, directustest.ErrDisabled) {
		t.Skip("DIRECTUS_TESTS=0: integration test skipped")
	}
	if dxErr != nil {
		t.Fatalf("starting Directus: %v", dxErr)
	}
}

// setupFixture creates the collection "articles" (title, status, secret)
// and one user per permission shape, plus public read of published titles.
func setupFixture(ctx context.Context) error {
	fields := []directustest.Field{{Name: "title"}, {Name: "status"}, {Name: "secret"}, {Name: "body", Type: "text"}}
	for _, c := range []string{"articles", "notes", "private"} {
		if err := dx.CreateCollection(ctx, c, fields...); err != nil {
			return err
		}
	}
	fieldsRole, err := dx.CreateRoleWithReadPolicy(ctx, "fields", "articles", []string{"id", "title", "status"}, nil)
	if err != nil {
		return err
	}
	pubRole, err := dx.CreateRoleWithReadPolicy(ctx, "published", "articles", nil, map[string]any{"status": map[string]any{"_eq": "published"}})
	if err != nil {
		return err
	}
	noneRole, err := dx.CreateRoleWithReadPolicy(ctx, "none", "notes", nil, nil)
	if err != nil {
		return err
	}
	for email, u := range map[string][2]string{
		"fields@example.com": {fieldsToken, fieldsRole},
		"pub@example.com":    {pubToken, pubRole},
		"none@example.com":   {noneToken, noneRole},
	} {
		if _, err := dx.CreateUser(ctx, email, u[0], u[1]); err != nil {
			return err
		}
	}
	if err := coverEverything(ctx, dx); err != nil {
		return err
	}
	return dx.SetPublicRead(ctx, "articles", []string{"id", "title"}, map[string]any{"status": map[string]any{"_eq": "published"}})
}

// coverEverything makes an active event Flow (without operations: it
// posts nothing) whose scope covers every collection, as flow install's
// does: brokers with a service token then see every collection covered and
// send no NOT_COVERED notices. The tests post their events themselves.
func coverEverything(ctx context.Context, inst *directustest.Instance) error {
	_, err := inst.Do(ctx, inst.AdminToken, http.MethodPost, "/flows", map[string]any{
		"name": "tests cover everything", "status": "active", "trigger": "event", "accountability": nil,
		"options": map[string]any{"type": "action", "scope": []string{"*.items.create", "*.items.update", "*.items.delete"}},
	}, nil)
	return err
}

// brokerConfig is the default configuration pointed at dx (started if
// needed).
func brokerConfig(t testing.TB) config.Config {
	requireDirectus(t)
	cfg := config.Default()
	cfg.DirectusURL = dx.URL
	cfg.WebhookSecret = secret
	return cfg
}

// createItem creates an item through the Directus REST API as admin.
func createItem(t *testing.T, collection string, item map[string]any) float64 {
	t.Helper()
	var out struct {
		Data map[string]any `json:"data"`
	}
	if _, err := dx.Do(t.Context(), adminToken, http.MethodPost, "/items/"+collection, item, &out); err != nil {
		t.Fatal(err)
	}
	return out.Data["id"].(float64)
}
