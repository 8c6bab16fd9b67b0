package directus_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

var (
	readerDxOnce sync.Once
	readerDx     *directustest.Instance
	readerDxErr  error
)

// readerDirectus starts one real Directus for the reader tests, with a
// collection "docs" and a role that reads only id,title of published docs.
func readerDirectus(t *testing.T) *directustest.Instance {
	t.Helper()
	readerDxOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		readerDx, readerDxErr = directustest.Start(ctx, directustest.Options{Version: "11.17.4"})
		if readerDxErr != nil {
			return
		}
		d := readerDx
		if readerDxErr = d.CreateCollection(ctx, "docs", directustest.Field{Name: "title"}, directustest.Field{Name: "status"}, directustest.Field{Name: "secret"}); readerDxErr != nil {
			return
		}
		role, err := d.CreateRoleWithReadPolicy(ctx, "docreader", "docs", []string{"id", "title", "status"}, map[string]any{"status": map[string]any{"_eq": "published"}})
		if err == nil {
			_, err = d.CreateUser(ctx, "docreader@example.com", "docreader-token", role)
		}
		if err == nil {
			role, err = d.CreateRoleWithReadPolicy(ctx, "nopk", "docs", []string{"title"}, nil)
		}
		if err == nil {
			_, err = d.CreateUser(ctx, "nopk@example.com", "nopk-token", role)
		}
		readerDxErr = err
	})
	if errors.Is(readerDxErr, directustest.ErrDisabled) {
		t.Skip(readerDxErr)
	}
	if readerDxErr != nil {
		t.Fatal(readerDxErr)
	}
	return readerDx
}

func TestMain(m *testing.M) {
	code := m.Run()
	if readerDx != nil {
		_ = readerDx.Stop()
	}
	os.Exit(code)
}

// TestReadItemsMatchesREST: ReadItems returns, per key, exactly what the
// token reads through GET /items/<c>/<key> with the same query — whether
// the keys are read in one batch or one by one.
func TestReadItemsMatchesREST(t *testing.T) {
	d := readerDirectus(t)
	ctx := t.Context()
	var keys []string
	for i, status := range []string{"published", "draft", "published"} {
		var out struct{ Data map[string]any }
		if _, err := d.Do(ctx, d.AdminToken, http.MethodPost, "/items/docs", map[string]any{"title": fmt.Sprint("doc", i), "status": status, "secret": "s"}, &out); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, fmt.Sprint(out.Data["id"]))
	}
	client, _ := directus.NewClient(d.URL, 10*time.Second)
	queries := []broker.Query{
		nil,
		{"fields": []any{"title"}},
		{"fields": []any{"id", "status"}, "filter": map[string]any{"title": map[string]any{"_neq": "doc2"}}},
	}
	for _, token := range []string{d.AdminToken, "docreader-token", "nopk-token"} {
		for _, q := range queries {
			t.Run(fmt.Sprintf("%s %v", token, q), func(t *testing.T) {
				r := &directus.Reader{Client: client}
				got, err := r.ReadItems(ctx, token, "docs", append(keys, "999999"), q)
				if err != nil {
					t.Fatal(err)
				}
				params, _ := directus.QueryValues(q)
				for _, k := range append(keys, "999999") {
					var want struct{ Data map[string]any }
					status, _ := d.Do(ctx, token, http.MethodGet, "/items/docs/"+k+"?"+params.Encode(), nil, &want)
					item, ok := got[k]
					if status != http.StatusOK {
						if ok {
							t.Fatalf("key %s: REST answers %d, ReadItems returned %s", k, status, item)
						}
						continue
					}
					var gotItem map[string]any
					_ = json.Unmarshal(item, &gotItem)
					if !reflect.DeepEqual(gotItem, want.Data) {
						t.Fatalf("key %s: ReadItems %v, REST %v", k, gotItem, want.Data)
					}
				}
			})
		}
	}
}

// TestReadItemsTokenRefused: a token Directus refuses is ErrTokenExpired.
func TestReadItemsTokenRefused(t *testing.T) {
	d := readerDirectus(t)
	client, _ := directus.NewClient(d.URL, 10*time.Second)
	r := &directus.Reader{Client: client}
	_, err := r.ReadItems(context.Background(), "expired-or-bogus", "docs", []string{"1", "2"}, nil)
	if !errors.Is(err, broker.ErrTokenExpired) {
		t.Fatalf("want ErrTokenExpired, got %v", err)
	}
}

// TestReadItemsManyKeys: more keys than fit one request are read in chunks,
// and a "*.*" field list still maps every item to its key.
func TestReadItemsManyKeys(t *testing.T) {
	d := readerDirectus(t)
	ctx := t.Context()
	items := make([]map[string]any, 250)
	for i := range items {
		items[i] = map[string]any{"title": fmt.Sprint("many", i), "status": "published"}
	}
	var out struct {
		Data []struct {
			ID float64 `json:"id"`
		} `json:"data"`
	}
	if _, err := d.Do(ctx, d.AdminToken, http.MethodPost, "/items/docs?fields=id", items, &out); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(out.Data))
	for i, it := range out.Data {
		keys[i] = fmt.Sprint(it.ID)
	}
	client, _ := directus.NewClient(d.URL, 10*time.Second)
	r := &directus.Reader{Client: client}
	for _, q := range []broker.Query{nil, {"fields": []any{"*.*"}}} {
		got, err := r.ReadItems(ctx, d.AdminToken, "docs", keys, q)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(keys) {
			t.Fatalf("query %v: %d of %d keys read", q, len(got), len(keys))
		}
		var item map[string]any
		_ = json.Unmarshal(got[keys[0]], &item)
		if fmt.Sprint(item["id"]) != keys[0] {
			t.Fatalf("query %v: item %v lacks its id", q, item)
		}
	}
}
