package flow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// The Flow that feeds the broker: an Event Hook on item actions and one
// "Webhook / Request URL" operation posting the trigger to the broker.
// Install creates it over the REST API, or updates it in place when a
// Flow of that name exists, so running it again is safe.

// DefaultName names the Flow when Spec.Name is empty.
const DefaultName = "directus-ws-broker"

// itemScope is the item events of the collections the Flow lists; for a
// system collection among them (directus_users) Directus fires its own
// events (users.create).
var itemScope = []string{"items.create", "items.update", "items.delete"}

// allScope is the item events of every collection, those created later
// included: Directus's event emitter matches the wildcard (checked with
// 11.17.4 and 12.3.1).
var allScope = []string{"*.items.create", "*.items.update", "*.items.delete"}

// AccessCollections are the system collections whose changes decide who
// may read what: the Flow also fires for them, so the broker regroups its
// subscribers as soon as access changes (see docs/sharing.md).
var AccessCollections = []string{
	"directus_users", "directus_roles", "directus_policies", "directus_access", "directus_permissions", "directus_relations",
}

// operationKey identifies the Flow's request operation among the Flow's
// operations (keys are unique per Flow).
const operationKey = "post_to_broker"

// Spec describes the Flow Install makes.
type Spec struct {
	// Name finds the Flow again on the next install; DefaultName if empty.
	Name string
	// WebhookURL is the broker's webhook, e.g. http://127.0.0.1:8080/webhook.
	WebhookURL string
	// Secret, when set, is sent in SecretHeader with every request.
	Secret string
	// SecretHeader is the header the broker reads the secret from (its
	// webhook_secret_header); required with Secret.
	SecretHeader string
	// Collections the Flow fires for. Empty means every collection, those
	// created later included.
	Collections []string
	// Accountability is the Flow's activity and revision logging: "" logs
	// nothing (each event would otherwise write an activity and a revision
	// row into Directus's database), "all" or "activity" log as Directus
	// does for Flows, for debugging a Flow in Directus's logs.
	Accountability string
}

// Result says what Install did.
type Result struct {
	FlowID      string
	OperationID string
	// Created is true when the Flow was created, false when it was updated.
	Created bool
	// Collections are the collections the Flow now fires for (nil: all).
	Collections []string
	// RemovedFlows are duplicate Flows of the same name that were deleted.
	RemovedFlows []string
	// RemovedOperations are other operations of the Flow that were deleted.
	RemovedOperations []string
}

// Removed is one Flow Remove deleted, with its operations.
type Removed struct {
	ID         string
	Operations []string
}

// Errors Install and Remove return for bad input, before changing
// anything. Their text is meant for the person running the command.
var (
	ErrTokenRefused      = errors.New("token refused by Directus")
	ErrNotAdmin          = errors.New("token is not an admin token")
	ErrUnknownCollection = errors.New("unknown collection")
	ErrNoCollections     = errors.New("no collections to watch")
)

// UnreachableError means Directus did not answer at URL, or something
// other than Directus did.
type UnreachableError struct {
	URL    string
	Reason string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach Directus at %s: %s", e.URL, e.Reason)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Validate reports the first invalid field of s, after applying defaults.
func (s Spec) Validate() error {
	_, err := s.normalized()
	return err
}

func (s Spec) normalized() (Spec, error) {
	if s.Name == "" {
		s.Name = DefaultName
	}
	u, err := url.Parse(s.WebhookURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return s, fmt.Errorf("broker url %q: must be an absolute http(s) URL", s.WebhookURL)
	}
	if s.Secret != "" && !httpguts.ValidHeaderFieldName(s.SecretHeader) {
		return s, fmt.Errorf("secret header %q: not a valid HTTP header name", s.SecretHeader)
	}
	seen := map[string]bool{}
	var cols []string
	for _, c := range s.Collections {
		c = strings.TrimSpace(c)
		if c == "" || seen[c] {
			continue
		}
		if strings.HasPrefix(c, "directus_") {
			// System collections emit users.create and the like, never
			// items.*: the Flow would silently never fire for them.
			return s, fmt.Errorf("collection %s is a Directus system collection: its changes are not item events", c)
		}
		seen[c] = true
		cols = append(cols, c)
	}
	s.Collections = cols
	switch s.Accountability {
	case "", "all", "activity":
	default:
		return s, fmt.Errorf("accountability %q: must be empty (no logging), all or activity", s.Accountability)
	}
	return s, nil
}

// CheckAdmin checks that Directus answers at c's URL and that token belongs
// to an administrator. It returns an *UnreachableError, ErrTokenRefused or
// ErrNotAdmin.
func CheckAdmin(ctx context.Context, c *directus.Client, token string) error {
	raw, err := c.DoRaw(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"server", "ping"}})
	if err != nil {
		if directus.Unavailable(err) {
			return &UnreachableError{URL: c.URL(), Reason: reason(err), Err: err}
		}
		return &UnreachableError{URL: c.URL(), Reason: fmt.Sprintf("GET /server/ping answered %d: is this Directus?", directus.AsError(err).Status), Err: err}
	}
	if strings.TrimSpace(string(raw)) != "pong" {
		return &UnreachableError{URL: c.URL(), Reason: "GET /server/ping did not answer pong: is this Directus?"}
	}
	// Reading Flows needs admin rights unless a policy grants them; the
	// answer also tells a refused token (401) from a weak one (403).
	_, err = c.Do(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"flows"}, Token: token,
		Query: url.Values{"limit": {"1"}, "fields": {"id"}}})
	if err != nil {
		var de *directus.Error
		if errors.As(err, &de) && de.Status == http.StatusUnauthorized {
			return ErrTokenRefused
		}
		if errors.As(err, &de) && de.Status == http.StatusForbidden {
			return ErrNotAdmin
		}
		return fmt.Errorf("read flows: %w", err)
	}
	admin, known, err := adminAccess(ctx, c, token)
	if err != nil {
		return err
	}
	if known && !admin {
		return ErrNotAdmin
	}
	return nil
}

// adminAccess asks whether token's user has admin access: Directus 11+
// keeps admin_access on policies (GET /policies/me/globals), older versions
// on the role. known is false when neither answers.
func adminAccess(ctx context.Context, c *directus.Client, token string) (admin, known bool, err error) {
	data, err := c.Do(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"policies", "me", "globals"}, Token: token})
	if err == nil {
		var g struct {
			AdminAccess *bool `json:"admin_access"`
		}
		if json.Unmarshal(data, &g) == nil && g.AdminAccess != nil {
			return *g.AdminAccess, true, nil
		}
	} else if directus.Unavailable(err) {
		return false, false, &UnreachableError{URL: c.URL(), Reason: reason(err), Err: err}
	}
	data, err = c.Do(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"users", "me"}, Token: token,
		Query: url.Values{"fields": {"role.admin_access"}}})
	if err != nil {
		if directus.Unavailable(err) {
			return false, false, &UnreachableError{URL: c.URL(), Reason: reason(err), Err: err}
		}
		return false, false, nil
	}
	var me struct {
		Role *struct {
			AdminAccess *bool `json:"admin_access"`
		} `json:"role"`
	}
	if json.Unmarshal(data, &me) == nil && me.Role != nil && me.Role.AdminAccess != nil {
		return *me.Role.AdminAccess, true, nil
	}
	return false, false, nil
}

// reason is the short cause of a transport error, without the URL.
func reason(err error) string {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return dns.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	var de *directus.Error
	if errors.As(err, &de) {
		return fmt.Sprintf("answered %d %s", de.Status, de.Code)
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, directus.ErrUnavailable.Error()+": "); i >= 0 {
		msg = msg[i+len(directus.ErrUnavailable.Error())+2:]
	}
	return msg
}

// collectionInfo is what GET /collections says about a collection.
type collectionInfo struct {
	Collection string          `json:"collection"`
	Schema     json.RawMessage `json:"schema"`
}

// isTable is false for folders: collections without a database table.
func (ci collectionInfo) isTable() bool {
	s := strings.TrimSpace(string(ci.Schema))
	return s != "" && s != "null"
}

// resolveCollections checks that each named collection exists and is a
// table.
func resolveCollections(ctx context.Context, c *directus.Client, token string, names []string) ([]string, error) {
	for _, name := range names {
		data, err := c.Do(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"collections", name}, Token: token})
		var de *directus.Error
		if errors.As(err, &de) && (de.Status == http.StatusNotFound || de.Status == http.StatusForbidden) {
			// An admin gets 403 for a collection that does not exist.
			return nil, fmt.Errorf("%w %s", ErrUnknownCollection, name)
		}
		if err != nil {
			return nil, fmt.Errorf("read collection %s: %w", name, err)
		}
		var ci collectionInfo
		if err := json.Unmarshal(data, &ci); err != nil {
			return nil, fmt.Errorf("read collection %s: %w", name, err)
		}
		if !ci.isTable() {
			return nil, fmt.Errorf("collection %s is a folder, not a table: it has no items", name)
		}
	}
	return names, nil
}

// flowRecord is a Flow as GET /flows returns it.
type flowRecord struct {
	ID         string   `json:"id"`
	Operation  *string  `json:"operation"`
	Operations []string `json:"operations"`
}

// findFlows returns the Flows named name, oldest first.
func findFlows(ctx context.Context, c *directus.Client, token, name string) ([]flowRecord, error) {
	data, err := c.Do(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"flows"}, Token: token, Query: url.Values{
		"filter[name][_eq]": {name},
		"fields":            {"id,operation,operations"},
		"sort":              {"date_created,id"},
		"limit":             {"-1"},
	}})
	if err != nil {
		return nil, fmt.Errorf("find flows named %q: %w", name, err)
	}
	var flows []flowRecord
	if err := json.Unmarshal(data, &flows); err != nil {
		return nil, fmt.Errorf("find flows named %q: %w", name, err)
	}
	return flows, nil
}

// operationRecord is an operation as GET /operations returns it.
type operationRecord struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

func flowOperations(ctx context.Context, c *directus.Client, token, flowID string) ([]operationRecord, error) {
	data, err := c.Do(ctx, directus.Request{Method: http.MethodGet, Segments: []string{"operations"}, Token: token, Query: url.Values{
		"filter[flow][_eq]": {flowID},
		"fields":            {"id,key"},
		"limit":             {"-1"},
	}})
	if err != nil {
		return nil, fmt.Errorf("list operations of flow %s: %w", flowID, err)
	}
	var ops []operationRecord
	if err := json.Unmarshal(data, &ops); err != nil {
		return nil, fmt.Errorf("list operations of flow %s: %w", flowID, err)
	}
	return ops, nil
}

// created decodes the id of a POST's answer.
func created(data json.RawMessage) (string, error) {
	var rec struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.ID == "" {
		return "", errors.New("the answer has no id")
	}
	return rec.ID, nil
}

// Install makes the Flow of spec exist, active and configured as spec
// says, with exactly one operation. It first checks, changing nothing,
// that Directus answers, that token is an admin's and that every named
// collection exists; then it creates the Flow or updates the one with the
// same name in place (deleting duplicates of that name and stray
// operations of the Flow).
func Install(ctx context.Context, c *directus.Client, token string, spec Spec) (Result, error) {
	spec, err := spec.normalized()
	if err != nil {
		return Result{}, err
	}
	if err := CheckAdmin(ctx, c, token); err != nil {
		return Result{}, err
	}
	cols, err := resolveCollections(ctx, c, token, spec.Collections)
	if err != nil {
		return Result{}, err
	}
	flows, err := findFlows(ctx, c, token, spec.Name)
	if err != nil {
		return Result{}, err
	}
	res := Result{Collections: cols}

	// Every check passed: from here on Directus changes.
	scope := append([]string{}, itemScope...)
	if len(cols) == 0 {
		scope = append(scope, allScope...)
	}
	var accountability any // null: the Flow logs no activity and no revisions
	if spec.Accountability != "" {
		accountability = spec.Accountability
	}
	flowBody := map[string]any{
		"name":           spec.Name,
		"icon":           "bolt",
		"description":    "Posts item events (and changes of access) to directus-ws-broker. Managed by `directus-ws-broker flow install`: edits here are overwritten by the next install.",
		"status":         "active",
		"trigger":        "event",
		"accountability": accountability,
		"options": map[string]any{
			"type":        "action",
			"scope":       scope,
			"collections": append(append([]string{}, cols...), AccessCollections...),
		},
	}
	headers := []map[string]string{}
	if spec.Secret != "" {
		headers = append(headers, map[string]string{"header": spec.SecretHeader, "value": spec.Secret})
	}
	opBody := map[string]any{
		"name":       "Post to broker",
		"key":        operationKey,
		"type":       "request",
		"position_x": 19,
		"position_y": 1,
		"resolve":    nil,
		"reject":     nil,
		"options": map[string]any{
			"method":  "POST",
			"url":     spec.WebhookURL,
			"headers": headers,
			// The broker parses the trigger as Directus sends it.
			"body": "{{$trigger}}",
		},
	}

	if len(flows) == 0 {
		data, err := c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"flows"}, Token: token, Body: flowBody})
		if err != nil {
			return res, fmt.Errorf("create flow: %w", err)
		}
		if res.FlowID, err = created(data); err != nil {
			return res, fmt.Errorf("create flow: %w", err)
		}
		res.Created = true
		opBody["flow"] = res.FlowID
		data, err = c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"operations"}, Token: token, Body: opBody})
		if err != nil {
			return res, fmt.Errorf("create operation of flow %s: %w", res.FlowID, err)
		}
		if res.OperationID, err = created(data); err != nil {
			return res, fmt.Errorf("create operation of flow %s: %w", res.FlowID, err)
		}
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodPatch, Segments: []string{"flows", res.FlowID}, Token: token,
			Body: map[string]any{"operation": res.OperationID}}); err != nil {
			return res, fmt.Errorf("link operation %s to flow %s: %w", res.OperationID, res.FlowID, err)
		}
		return res, nil
	}

	// Duplicates can come from installs that ran concurrently; they carry
	// this tool's name, so they are this tool's to delete.
	keep := flows[0]
	for _, dup := range flows[1:] {
		if err := deleteFlow(ctx, c, token, dup.ID, dup.Operations); err != nil {
			return res, err
		}
		res.RemovedFlows = append(res.RemovedFlows, dup.ID)
	}
	res.FlowID = keep.ID
	ops, err := flowOperations(ctx, c, token, keep.ID)
	if err != nil {
		return res, err
	}
	// Reuse the operation with our key, else the one the Flow starts with.
	for _, op := range ops {
		if op.Key == operationKey {
			res.OperationID = op.ID
		}
	}
	if res.OperationID == "" && keep.Operation != nil {
		for _, op := range ops {
			if op.ID == *keep.Operation {
				res.OperationID = op.ID
			}
		}
	}
	if res.OperationID != "" {
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodPatch, Segments: []string{"operations", res.OperationID}, Token: token, Body: opBody}); err != nil {
			return res, fmt.Errorf("update operation %s: %w", res.OperationID, err)
		}
	} else {
		opBody["flow"] = keep.ID
		data, err := c.Do(ctx, directus.Request{Method: http.MethodPost, Segments: []string{"operations"}, Token: token, Body: opBody})
		if err != nil {
			return res, fmt.Errorf("create operation of flow %s: %w", keep.ID, err)
		}
		if res.OperationID, err = created(data); err != nil {
			return res, fmt.Errorf("create operation of flow %s: %w", keep.ID, err)
		}
	}
	flowBody["operation"] = res.OperationID
	if _, err := c.Do(ctx, directus.Request{Method: http.MethodPatch, Segments: []string{"flows", keep.ID}, Token: token, Body: flowBody}); err != nil {
		return res, fmt.Errorf("update flow %s: %w", keep.ID, err)
	}
	// Unlinked only now, so the Flow never points at a deleted operation.
	var stray []string
	for _, op := range ops {
		if op.ID != res.OperationID {
			stray = append(stray, op.ID)
		}
	}
	if len(stray) > 0 {
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodDelete, Segments: []string{"operations"}, Token: token, Body: stray}); err != nil {
			return res, fmt.Errorf("delete stray operations of flow %s: %w", keep.ID, err)
		}
		res.RemovedOperations = stray
	}
	return res, nil
}

// deleteFlow deletes a Flow's operations, then the Flow.
func deleteFlow(ctx context.Context, c *directus.Client, token, id string, ops []string) error {
	if len(ops) > 0 {
		// One batch: operations may point at each other (resolve/reject).
		if _, err := c.Do(ctx, directus.Request{Method: http.MethodDelete, Segments: []string{"operations"}, Token: token, Body: ops}); err != nil {
			return fmt.Errorf("delete operations of flow %s: %w", id, err)
		}
	}
	if _, err := c.Do(ctx, directus.Request{Method: http.MethodDelete, Segments: []string{"flows", id}, Token: token}); err != nil {
		return fmt.Errorf("delete flow %s: %w", id, err)
	}
	return nil
}

// Remove deletes every Flow named name (DefaultName if empty) and
// its operations, after the same checks as Install. None is not an
// error: it returns an empty list.
func Remove(ctx context.Context, c *directus.Client, token, name string) ([]Removed, error) {
	if name == "" {
		name = DefaultName
	}
	if err := CheckAdmin(ctx, c, token); err != nil {
		return nil, err
	}
	flows, err := findFlows(ctx, c, token, name)
	if err != nil {
		return nil, err
	}
	var removed []Removed
	for _, f := range flows {
		if err := deleteFlow(ctx, c, token, f.ID, f.Operations); err != nil {
			return removed, err
		}
		removed = append(removed, Removed{ID: f.ID, Operations: f.Operations})
	}
	return removed, nil
}
