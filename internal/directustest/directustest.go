// Package directustest runs a real Directus for integration tests.
//
// Start (or Require, for tests) runs scripts/directus.sh from the repository root: it installs
// the pinned Directus version into a cache outside the repository on first use (minutes), then
// starts it on a free port of 127.0.0.1 with a fresh SQLite database copied from a bootstrapped
// template (seconds). The admin's static token is DefaultAdminToken.
//
// Environment:
//
//	DIRECTUS_TESTS=0      Start returns ErrDisabled (Require skips the test).
//	DIRECTUS_VERSION=V    the default version (otherwise DefaultVersion).
//	DIRECTUS_CACHE=DIR    where the script caches installs (default ~/.cache/directus-ws-broker).
//
// Use 11.17.4 (the default) for anything involving custom permissions: Directus 12 without a
// license refuses permission rules with field lists or item filters.
//
// The package only uses the standard library.
package directustest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/scripttest"
)

// DefaultVersion is the Directus version started when neither Options.Version nor
// DIRECTUS_VERSION says otherwise.
const DefaultVersion = "11.17.4"

// DefaultAdminToken is the static token of the admin (admin@example.com / admin-password) of
// every database the harness creates.
const DefaultAdminToken = "admin-token"

// UserPassword is the password CreateUser gives every user it creates.
const UserPassword = "user-password"

// ErrDisabled is returned by Start when DIRECTUS_TESTS=0.
var ErrDisabled = errors.New("directustest: disabled by DIRECTUS_TESTS=0")

// Options for Start. Version defaults to env DIRECTUS_VERSION or DefaultVersion.
type Options struct {
	// Version is a directory name under scripts/directus/ (for example "11.17.4" or "12.3.1").
	Version string
	// Env holds extra Directus environment variables (for example WEBSOCKETS_ENABLED=true).
	Env map[string]string
}

// Instance is a running Directus.
type Instance struct {
	URL        string // http://127.0.0.1:PORT, no trailing slash
	AdminToken string // static token of the admin user
	Dir        string // instance directory: env, data.db, directus.log, ...
	Version    string

	script string
	client *http.Client

	mu      sync.Mutex
	stopped bool
}

// Start runs scripts/directus.sh start on a free port in a fresh temp dir (fresh database) and
// waits until healthy. On any failure it stops whatever it started and removes the temp dir.
// Canceling ctx aborts the start (including a cold install).
func Start(ctx context.Context, opts Options) (*Instance, error) {
	if os.Getenv("DIRECTUS_TESTS") == "0" {
		return nil, ErrDisabled
	}
	version := opts.Version
	if version == "" {
		version = os.Getenv("DIRECTUS_VERSION")
	}
	if version == "" {
		version = DefaultVersion
	}
	script, err := findScript()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "directustest-"+version+"-*")
	if err != nil {
		return nil, fmt.Errorf("directustest: %w", err)
	}
	inst := &Instance{
		AdminToken: DefaultAdminToken,
		Dir:        dir,
		Version:    version,
		script:     script,
		client:     &http.Client{Timeout: 60 * time.Second},
	}

	args := []string{"start", "--dir", dir, "--version", version, "--port", "0",
		// Directus runs in its own process group; this makes it exit with the test binary
		// even when the binary dies without running cleanups (a test timeout, a crash).
		"--watch-pid", strconv.Itoa(os.Getpid())}
	keys := make([]string, 0, len(opts.Env))
	for k := range opts.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--env", k+"="+opts.Env[k])
	}
	out, err := inst.run(ctx, args...)
	if err != nil {
		_ = inst.Stop()
		return nil, err
	}
	inst.URL = lastLine(out)
	if !strings.HasPrefix(inst.URL, "http://") {
		_ = inst.Stop()
		return nil, fmt.Errorf("directustest: unexpected output of directus.sh start: %q", out)
	}
	return inst, nil
}

// Require starts Directus for a test: it skips the test when DIRECTUS_TESTS=0, fails it when
// Directus cannot start, and stops Directus when the test ends.
func Require(t testing.TB, opts Options) *Instance {
	t.Helper()
	inst, err := Start(t.Context(), opts)
	if errors.Is(err, ErrDisabled) {
		t.Skip("Directus integration tests disabled (DIRECTUS_TESTS=0)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := inst.Stop(); err != nil {
			t.Errorf("stopping Directus: %v", err)
		}
	})
	return inst
}

// Stop stops Directus and removes its directory. It is idempotent.
func (i *Instance) Stop() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return nil
	}
	i.stopped = true
	// A fresh context: Stop often runs because the caller's context is already done.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := i.run(ctx, "stop", "--dir", i.Dir)
	if rmErr := os.RemoveAll(i.Dir); err == nil && rmErr != nil {
		err = fmt.Errorf("directustest: %w", rmErr)
	}
	return err
}

// Reset replaces the database with a fresh copy of the template (everything created since
// Start is gone, the admin token is DefaultAdminToken again) and restarts Directus on the same
// URL.
func (i *Instance) Reset(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return errors.New("directustest: Reset after Stop")
	}
	out, err := i.run(ctx, "reset", "--dir", i.Dir)
	if err != nil {
		return err
	}
	if u := lastLine(out); strings.HasPrefix(u, "http://") {
		i.URL = u
	}
	return nil
}

// Kill ends Directus at once (SIGKILL to its process group), as a crash or
// an OOM kill would; its data stays, and Restart brings it back.
func (i *Instance) Kill(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	_, err := i.run(ctx, "kill", "--dir", i.Dir)
	return err
}

// Restart starts Directus again with the same data, settings and (when
// free) port, and waits until it is healthy.
func (i *Instance) Restart(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return errors.New("directustest: Restart after Stop")
	}
	out, err := i.run(ctx, "restart", "--dir", i.Dir)
	if err != nil {
		return err
	}
	if u := lastLine(out); strings.HasPrefix(u, "http://") {
		i.URL = u
	}
	return nil
}

// Log returns the Directus log so far (for test failure messages).
func (i *Instance) Log() string {
	b, err := os.ReadFile(filepath.Join(i.Dir, "directus.log"))
	if err != nil {
		return ""
	}
	return string(b)
}

// run runs directus.sh with args and returns its stdout. Its stderr (install progress, errors)
// goes to os.Stderr as it comes and into the error.
func (i *Instance) run(ctx context.Context, args ...string) (string, error) {
	out, err := scripttest.Run(ctx, i.script, args...)
	if err != nil {
		return out, fmt.Errorf("directustest: %w", err)
	}
	return out, nil
}

// findScript finds scripts/directus.sh in the repository root: the nearest directory holding
// go.mod, walking up from the working directory (go test runs in the package's directory).
func findScript() (string, error) {
	script, err := scripttest.Find("directus.sh")
	if err != nil {
		return "", fmt.Errorf("directustest: %w", err)
	}
	return script, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if j := strings.LastIndexByte(s, '\n'); j >= 0 {
		s = s[j+1:]
	}
	return strings.TrimSpace(s)
}

// StatusError is the error Do returns for a response outside 2xx.
type StatusError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("directustest: %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// Do sends one JSON request to Directus and returns the response status.
//
// token is sent as "Authorization: Bearer <token>" unless empty (the public role). path starts
// with "/" and may carry a query. body, unless nil, is encoded as JSON. out, unless nil, gets the
// whole response body (including Directus's "data" envelope) decoded from JSON.
//
// err is non-nil for transport and decoding errors and for any status outside 2xx; the latter is
// a *StatusError holding the body, and status is set too, so tests can check 401/403 answers.
func (i *Instance) Do(ctx context.Context, token, method, path string, body any, out any) (status int, err error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, fmt.Errorf("directustest: encoding %s %s body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, i.URL+path, rd)
	if err != nil {
		return 0, fmt.Errorf("directustest: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client := i.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Errorf("directustest: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, fmt.Errorf("directustest: reading %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, &StatusError{Method: method, Path: path, Status: resp.StatusCode, Body: string(raw)}
	}
	if out != nil && len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("directustest: decoding %s %s response: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// admin is Do with the admin token, for the helpers below.
func (i *Instance) admin(ctx context.Context, method, path string, body any, out any) error {
	_, err := i.Do(ctx, i.AdminToken, method, path, body, out)
	return err
}

// Field is a field of a collection created by CreateCollection.
type Field struct {
	Name string
	// Type is a Directus field type: "string" (the default when empty), "text", "integer",
	// "float", "boolean", "json", "timestamp", "uuid", ...
	Type string
	// Schema and Meta, when set, are sent as the field's "schema" and "meta" objects.
	Schema map[string]any
	Meta   map[string]any
}

// CreateCollection creates a collection with an integer auto-increment primary key "id" plus
// the given fields.
func (i *Instance) CreateCollection(ctx context.Context, name string, fields ...Field) error {
	return i.CreateCollectionMeta(ctx, name, nil, fields...)
}

// CreateCollectionMeta is CreateCollection with the collection's meta (for
// example {"singleton": true}).
func (i *Instance) CreateCollectionMeta(ctx context.Context, name string, collectionMeta map[string]any, fields ...Field) error {
	if collectionMeta == nil {
		collectionMeta = map[string]any{}
	}
	fs := []map[string]any{{
		"field": "id",
		"type":  "integer",
		"meta":  map[string]any{"hidden": true, "readonly": true, "interface": "input"},
		"schema": map[string]any{
			"is_primary_key":     true,
			"has_auto_increment": true,
		},
	}}
	for _, f := range fields {
		typ := f.Type
		if typ == "" {
			typ = "string"
		}
		schema := f.Schema
		if schema == nil {
			schema = map[string]any{}
		}
		meta := f.Meta
		if meta == nil {
			meta = map[string]any{}
		}
		fs = append(fs, map[string]any{"field": f.Name, "type": typ, "schema": schema, "meta": meta})
	}
	return i.admin(ctx, http.MethodPost, "/collections", map[string]any{
		"collection": name,
		"schema":     map[string]any{},
		"meta":       collectionMeta,
		"fields":     fs,
	}, nil)
}

// CreateUser creates an active user with the static token token (sent as a Bearer token or
// ?access_token=) and the password UserPassword, in the role roleID ("" for no role), and
// returns the user's id.
func (i *Instance) CreateUser(ctx context.Context, email, token string, roleID string) (id string, err error) {
	body := map[string]any{
		"email":    email,
		"password": UserPassword,
		"status":   "active",
		"token":    token,
	}
	if roleID != "" {
		body["role"] = roleID
	}
	var resp struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := i.admin(ctx, http.MethodPost, "/users", body, &resp); err != nil {
		return "", err
	}
	return resp.Data.ID, nil
}

// CreateRoleWithReadPolicy creates a role and a policy (no app access) attached to it that may
// read collection: only fields (nil means all: "*") and only the items matching filter (a
// Directus filter such as {"status":{"_eq":"published"}}; nil means all items). It returns the
// role's id.
//
// Field lists other than "*" and filters need Directus 11: 12.x refuses them without a license.
func (i *Instance) CreateRoleWithReadPolicy(ctx context.Context, name, collection string, fields []string, filter map[string]any) (roleID string, err error) {
	var role, policy struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := i.admin(ctx, http.MethodPost, "/roles", map[string]any{"name": name}, &role); err != nil {
		return "", err
	}
	if err := i.admin(ctx, http.MethodPost, "/policies", map[string]any{
		"name":         name + " read " + collection,
		"icon":         "badge",
		"app_access":   false,
		"admin_access": false,
	}, &policy); err != nil {
		return "", err
	}
	if err := i.addReadPermission(ctx, policy.Data.ID, collection, fields, filter); err != nil {
		return "", err
	}
	if err := i.admin(ctx, http.MethodPost, "/access", map[string]any{
		"role":   role.Data.ID,
		"policy": policy.Data.ID,
	}, nil); err != nil {
		return "", err
	}
	return role.Data.ID, nil
}

// SetPublicRead gives the public policy (requests without a token) read permission on
// collection, limited to fields (nil means "*") and to the items matching filter (nil: all).
func (i *Instance) SetPublicRead(ctx context.Context, collection string, fields []string, filter map[string]any) error {
	// The public policy is the one attached to neither a role nor a user.
	var access struct {
		Data []struct {
			Policy string `json:"policy"`
		} `json:"data"`
	}
	q := url.Values{}
	q.Set("filter[role][_null]", "true")
	q.Set("filter[user][_null]", "true")
	q.Set("fields", "policy")
	if err := i.admin(ctx, http.MethodGet, "/access?"+q.Encode(), nil, &access); err != nil {
		return err
	}
	if len(access.Data) == 0 || access.Data[0].Policy == "" {
		return errors.New("directustest: no public policy found")
	}
	return i.addReadPermission(ctx, access.Data[0].Policy, collection, fields, filter)
}

func (i *Instance) addReadPermission(ctx context.Context, policyID, collection string, fields []string, filter map[string]any) error {
	if fields == nil {
		fields = []string{"*"}
	}
	perm := map[string]any{
		"policy":     policyID,
		"collection": collection,
		"action":     "read",
		"fields":     fields,
	}
	if filter != nil {
		perm["permissions"] = filter
	}
	return i.admin(ctx, http.MethodPost, "/permissions", perm, nil)
}

// Secret is the instance's SECRET (it signs its JWTs).
func (i *Instance) Secret() (string, error) {
	b, err := os.ReadFile(filepath.Join(i.Dir, "secret"))
	return strings.TrimSpace(string(b)), err
}
