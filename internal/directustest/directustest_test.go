package directustest_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

type item struct {
	ID     int     `json:"id"`
	Title  string  `json:"title"`
	Status string  `json:"status"`
	Secret *string `json:"secret"`
}

// TestPermissions11 checks the harness end to end on 11.17.4: field- and item-level read
// permissions seen through a user's static token, public read, and Reset.
func TestPermissions11(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute) // a cold install takes ~3 min
	defer cancel()
	d, err := directustest.Start(ctx, directustest.Options{Version: "11.17.4"})
	if errors.Is(err, directustest.ErrDisabled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(d.Dir); !os.IsNotExist(err) {
			t.Errorf("instance dir %s still there after Stop (%v)", d.Dir, err)
		}
		if err := d.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
	}()

	if err := d.CreateCollection(ctx, "articles",
		directustest.Field{Name: "title"},
		directustest.Field{Name: "status"},
		directustest.Field{Name: "secret"},
	); err != nil {
		t.Fatal(err)
	}
	for _, it := range []map[string]any{
		{"title": "pub", "status": "published", "secret": "s1"},
		{"title": "draft", "status": "draft", "secret": "s2"},
	} {
		if _, err := d.Do(ctx, d.AdminToken, http.MethodPost, "/items/articles", it, nil); err != nil {
			t.Fatal(err)
		}
	}
	role, err := d.CreateRoleWithReadPolicy(ctx, "reader", "articles",
		[]string{"id", "title", "status"}, map[string]any{"status": map[string]any{"_eq": "published"}})
	if err != nil {
		t.Fatal(err)
	}
	uid, err := d.CreateUser(ctx, "reader@example.com", "reader-token", role)
	if err != nil {
		t.Fatal(err)
	}
	if uid == "" {
		t.Fatal("CreateUser returned an empty id")
	}

	var got struct{ Data []item }
	if _, err := d.Do(ctx, "reader-token", http.MethodGet, "/items/articles?fields=*", nil, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Data) != 1 || got.Data[0].Title != "pub" || got.Data[0].Status != "published" {
		t.Fatalf("reader sees %+v, want only the published item", got.Data)
	}
	if got.Data[0].Secret != nil {
		t.Fatalf("reader sees secret %q", *got.Data[0].Secret)
	}
	status, err := d.Do(ctx, "reader-token", http.MethodGet, "/items/articles?fields=secret", nil, nil)
	var se *directustest.StatusError
	if status != http.StatusForbidden || !errors.As(err, &se) {
		t.Fatalf("asking for secret: status %d err %v, want 403 StatusError", status, err)
	}

	// The admin sees everything.
	got.Data = nil
	if _, err := d.Do(ctx, d.AdminToken, http.MethodGet, "/items/articles", nil, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Data) != 2 {
		t.Fatalf("admin sees %d items, want 2", len(got.Data))
	}

	// Public: nothing, then titles of published items.
	if status, _ := d.Do(ctx, "", http.MethodGet, "/items/articles", nil, nil); status != http.StatusForbidden {
		t.Fatalf("public read before SetPublicRead: status %d, want 403", status)
	}
	if err := d.SetPublicRead(ctx, "articles", []string{"id", "title"}, map[string]any{"status": map[string]any{"_eq": "published"}}); err != nil {
		t.Fatal(err)
	}
	got.Data = nil
	if _, err := d.Do(ctx, "", http.MethodGet, "/items/articles", nil, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Data) != 1 || got.Data[0].Title != "pub" || got.Data[0].Status != "" {
		t.Fatalf("public sees %+v, want the published item's id and title", got.Data)
	}

	// Reset: a fresh database on the same URL.
	url := d.URL
	if err := d.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if d.URL != url {
		t.Errorf("URL changed on Reset: %s -> %s", url, d.URL)
	}
	var cols struct {
		Data []struct{ Collection string }
	}
	if _, err := d.Do(ctx, d.AdminToken, http.MethodGet, "/collections", nil, &cols); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(cols.Data, func(c struct{ Collection string }) bool { return c.Collection == "articles" }) {
		t.Fatal("collection articles still there after Reset")
	}
	if status, _ := d.Do(ctx, "reader-token", http.MethodGet, "/users/me", nil, nil); status != http.StatusUnauthorized {
		t.Fatalf("reader token after Reset: status %d, want 401", status)
	}
}

// TestStart12 checks that the newest pinned version starts and answers the admin token.
func TestStart12(t *testing.T) {
	if os.Getenv("DIRECTUS_SKIP_V12") == "1" {
		t.Skip("DIRECTUS_SKIP_V12=1")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	d, err := directustest.Start(ctx, directustest.Options{
		Version: "12.3.1",
		Env:     map[string]string{"WEBSOCKETS_ENABLED": "true"},
	})
	if errors.Is(err, directustest.ErrDisabled) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	var me struct {
		Data struct{ Email string }
	}
	if _, err := d.Do(ctx, d.AdminToken, http.MethodGet, "/users/me", nil, &me); err != nil {
		t.Fatal(err)
	}
	if me.Data.Email != "admin@example.com" {
		t.Fatalf("admin email %q", me.Data.Email)
	}
	var info struct {
		Data struct {
			Version string
		}
	}
	if _, err := d.Do(ctx, d.AdminToken, http.MethodGet, "/server/info", nil, &info); err != nil {
		t.Fatal(err)
	}
	if info.Data.Version != "" && info.Data.Version != "12.3.1" {
		t.Fatalf("server reports version %q", info.Data.Version)
	}
}

// TestRequireDisabled checks the DIRECTUS_TESTS=0 switch without starting anything.
func TestRequireDisabled(t *testing.T) {
	t.Setenv("DIRECTUS_TESTS", "0")
	if _, err := directustest.Start(t.Context(), directustest.Options{}); !errors.Is(err, directustest.ErrDisabled) {
		t.Fatalf("Start with DIRECTUS_TESTS=0: %v, want ErrDisabled", err)
	}
}
