package directus

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// One subscription's reads of one key and of a batch ask Directus the same
// item parameters: the list-only ones (paging, search, sort, groupBy,
// aggregate) are dropped from both (issue 20: they were listed three
// times and differed, so a query with aggregate read one key aggregated and
// a batch not).
func TestReadsOfOneKeyAndABatchAskAlike(t *testing.T) {
	var mu sync.Mutex
	asked := map[string][]string{} // "one" / "batch" → parameter names
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/fields/c":
			_, _ = w.Write([]byte(`{"data":[{"field":"id","schema":{"is_primary_key":true}}]}`))
			return
		case r.URL.Path == "/items/c/1":
			record(&mu, asked, "one", r)
			_, _ = w.Write([]byte(`{"data":{"id":1}}`))
		case r.URL.Path == "/items/c":
			record(&mu, asked, "batch", r)
			_, _ = w.Write([]byte(`{"data":[{"id":1},{"id":2}]}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	client, err := NewClient(srv.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	r := &Reader{Client: client}
	q := broker.Query{"fields": []any{"id"}, "filter": map[string]any{"id": map[string]any{"_gt": 0}}, "aggregate": map[string]any{"count": "*"},
		"groupBy": []any{"id"}, "sort": []any{"-id"}, "limit": float64(5), "offset": float64(1), "page": float64(2), "search": "x", "meta": "*", "deep": map[string]any{}}
	if _, err := r.ReadItems(context.Background(), "t", "c", []string{"1"}, q); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadItems(context.Background(), "t", "c", []string{"1", "2"}, q); err != nil {
		t.Fatal(err)
	}
	one, batch := strings.Join(asked["one"], ","), strings.Join(without(asked["batch"], "limit"), ",")
	if one != "deep,fields,filter" || batch != one {
		t.Fatalf("one key asked %q, a batch %q (besides its own limit); want both deep,fields,filter", one, batch)
	}
}

func record(mu *sync.Mutex, asked map[string][]string, kind string, r *http.Request) {
	mu.Lock()
	defer mu.Unlock()
	var names []string
	for k := range r.URL.Query() {
		names = append(names, k)
	}
	sort.Strings(names)
	asked[kind] = names
}

func without(list []string, s string) []string {
	var out []string
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}
