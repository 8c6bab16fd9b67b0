package graphql

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// fakeDirectus answers GET /permissions/me (by token) and GET
// /server/specs/graphql/items, counting the prints.
type fakeDirectus struct {
	perms   map[string]string // token → /permissions/me answer
	prints  atomic.Int64
	noSpecs bool
	gate    chan struct{} // when set, a print waits for it…
	started chan struct{} // …after closing this
	once    sync.Once
}

func (f *fakeDirectus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch r.URL.Path {
	case "/permissions/me":
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(f.perms[token]))
	case "/server/specs/graphql/items":
		if f.noSpecs {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errors":[{"message":"Route /server/specs/graphql/items doesn't exist.","extensions":{"code":"ROUTE_NOT_FOUND"}}]}`))
			return
		}
		f.prints.Add(1)
		if f.gate != nil {
			f.once.Do(func() { close(f.started) })
			<-f.gate
		}
		_, _ = w.Write([]byte(testSDL))
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func newSource(t *testing.T, f *fakeDirectus, gen *atomic.Uint64) *Source {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := directus.NewClient(srv.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &Source{Client: c, Generation: gen.Load, TTL: time.Hour}
}

// Tokens whose /permissions/me answers are equal share one printed schema;
// another answer, or a permission change the model saw, prints again.
func TestSourceSharesByPermissions(t *testing.T) {
	same := `{"data":{"articles":{"read":{"access":"full","fields":["*"]}}}}`
	f := &fakeDirectus{perms: map[string]string{"a": same, "b": same, "c": `{"data":{"authors":{"read":{"access":"full","fields":["*"]}}}}`}}
	var gen atomic.Uint64
	src := newSource(t, f, &gen)
	ctx := context.Background()
	sa, err := src.Schema(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := src.Schema(ctx, "b")
	if sa != sb || f.prints.Load() != 1 {
		t.Fatalf("equal permissions: %p %p, %d prints", sa, sb, f.prints.Load())
	}
	if sc, _ := src.Schema(ctx, "c"); sc == sa || f.prints.Load() != 2 {
		t.Fatalf("other permissions: %d prints", f.prints.Load())
	}
	gen.Add(1)
	if s, _ := src.Schema(ctx, "a"); s == sa || f.prints.Load() != 3 {
		t.Fatalf("after a permission change: %d prints", f.prints.Load())
	}
}

// Concurrent first subscribers of one permission set wait for one print.
func TestSourceOnePrintAtATime(t *testing.T) {
	f := &fakeDirectus{perms: map[string]string{"a": `{}`, "b": `{}`}, gate: make(chan struct{}), started: make(chan struct{})}
	var gen atomic.Uint64
	src := newSource(t, f, &gen)
	var wg sync.WaitGroup
	got := make([]*Schema, 8)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = src.Schema(context.Background(), []string{"a", "b"}[i%2])
		}()
	}
	<-f.started // one print in flight; the others wait for it or find it done
	close(f.gate)
	wg.Wait()
	for _, s := range got {
		if s == nil || s != got[0] {
			t.Fatalf("schemas %v", got)
		}
	}
	if n := f.prints.Load(); n != 1 {
		t.Fatalf("%d prints", n)
	}
}

// Without Directus's schema printing (GRAPHQL_INTROSPECTION=false) the
// error says what is missing.
func TestSourceWithoutIntrospection(t *testing.T) {
	f := &fakeDirectus{perms: map[string]string{"a": `{}`}, noSpecs: true}
	var gen atomic.Uint64
	_, err := newSource(t, f, &gen).Schema(context.Background(), "a")
	if err == nil || !strings.Contains(err.Error(), "GRAPHQL_INTROSPECTION") {
		t.Fatalf("error %v", err)
	}
}
