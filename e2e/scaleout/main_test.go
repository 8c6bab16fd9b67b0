//go:build linux

// Package scaleout tests the broker as separately running processes: several
// instances sharing events through a real Redis, clients resuming with
// "since" across disconnects, Redis restarts and killed instances, and the
// single-process memory bus's resume. Every test talks to a real Directus
// (started once for the package) because subscribing checks read permission
// and every delivery reads the items with the subscriber's token.
//
// DIRECTUS_TESTS=0 or REDIS_TESTS=0 skip the tests needing them.
package scaleout

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

var (
	// raceEnabled is set when the tests are built with -race.
	raceEnabled bool

	// binary is the broker built once for the package by TestMain.
	binary string

	dx     *directustest.Instance
	dxOnce sync.Once
	dxErr  error
)

const (
	adminToken = directustest.DefaultAdminToken
	pubToken   = "published-only-token" // reads only items with status "published"
	secret     = "scaleout-webhook-secret"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scaleout-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "directus-ws-broker")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		// The processes are checked for data races like the tests are.
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Dir = moduleRoot()
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the broker:", err)
		os.Exit(1)
	}
	code := m.Run()
	if dx != nil {
		_ = dx.Stop()
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func moduleRoot() string {
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("no go.mod above the working directory")
		}
		dir = parent
	}
}

// collections every test may use, one per scenario so that scenarios do
// not see each other's history.
var collections = []string{"fanout", "resume", "restart", "retention", "failover", "fresh", "memory"}

// requireDirectus starts the shared Directus on first use with the
// collections, a user who reads only published items of "fanout", and skips
// when DIRECTUS_TESTS=0.
func requireDirectus(t testing.TB) {
	t.Helper()
	dxOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		dx, dxErr = directustest.Start(ctx, directustest.Options{Version: "11.17.4"})
		if dxErr != nil {
			return
		}
		for _, c := range collections {
			if dxErr = dx.CreateCollection(ctx, c, directustest.Field{Name: "title"}, directustest.Field{Name: "status"}); dxErr != nil {
				return
			}
		}
		var role string
		role, dxErr = dx.CreateRoleWithReadPolicy(ctx, "published", "fanout", nil, map[string]any{"status": map[string]any{"_eq": "published"}})
		if dxErr == nil {
			_, dxErr = dx.CreateUser(ctx, "published@example.com", pubToken, role)
		}
	})
	if errors.Is(dxErr, directustest.ErrDisabled) {
		t.Skip("DIRECTUS_TESTS=0: integration test skipped")
	}
	if dxErr != nil {
		t.Fatalf("starting Directus: %v", dxErr)
	}
}

// createItem creates an item as admin and returns its id.
func createItem(t testing.TB, collection string, item map[string]any) string {
	t.Helper()
	var out struct {
		Data map[string]any `json:"data"`
	}
	if _, err := dx.Do(t.Context(), adminToken, http.MethodPost, "/items/"+collection, item, &out); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(out.Data["id"])
}
