package directus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// ErrMalformed is returned by NormalizeWebhook for a body that is not JSON.
var ErrMalformed = errors.New("malformed JSON")

// NotEventError is returned for valid JSON that is not an item event; its
// text says why, and the webhook answers it with 422.
type NotEventError struct{ Reason string }

func (e *NotEventError) Error() string { return e.Reason }

// webhookBody is the union of the shapes Directus posts: a Flow's
// {{$trigger}} ("test.items.update"), a legacy webhook ("items.update" plus
// accountability) and the broker's own event shape ("action").
type webhookBody struct {
	Event      *string         `json:"event"`
	Action     *string         `json:"action"`
	Collection string          `json:"collection"`
	Payload    json.RawMessage `json:"payload"`
	Key        json.RawMessage `json:"key"`
	Keys       json.RawMessage `json:"keys"`
}

// NormalizeWebhook turns a webhook body (one event or a JSON array of them)
// into events. It accepts all of them or returns an error naming the first
// bad one: a rejected batch publishes nothing.
func NormalizeWebhook(body []byte) ([]broker.Event, error) {
	body = bytes.TrimSpace(body)
	if !json.Valid(body) {
		return nil, ErrMalformed
	}
	var raws []json.RawMessage
	if len(body) > 0 && body[0] == '[' {
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, ErrMalformed
		}
		if len(raws) == 0 {
			return nil, &NotEventError{"empty array: no events"}
		}
	} else {
		raws = []json.RawMessage{body}
	}
	events := make([]broker.Event, 0, len(raws))
	for i, raw := range raws {
		e, err := normalizeOne(raw)
		if err != nil {
			if len(raws) > 1 {
				return nil, &NotEventError{fmt.Sprintf("event %d: %s", i, err.Error())}
			}
			return nil, err
		}
		events = append(events, e)
	}
	return events, nil
}

func normalizeOne(raw json.RawMessage) (broker.Event, error) {
	var b webhookBody
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if len(raw) == 0 || raw[0] != '{' {
		return broker.Event{}, &NotEventError{"not a JSON object"}
	}
	if err := dec.Decode(&b); err != nil {
		return broker.Event{}, &NotEventError{fieldTypes(err)}
	}
	action, collection, err := actionOf(b)
	if err != nil {
		return broker.Event{}, &NotEventError{err.Error()}
	}
	if err := broker.ValidateCollection(collection); err != nil {
		return broker.Event{}, &NotEventError{err.Error()}
	}
	keys, rawKeys, err := keysOf(b, action)
	if err != nil {
		return broker.Event{}, &NotEventError{err.Error()}
	}
	e := broker.Event{Action: action, Collection: collection, Keys: keys, Payload: b.Payload}
	if action == broker.ActionDelete {
		e.Payload, _ = json.Marshal(keys)
		e.RawKeys = rawKeys
	}
	if strings.HasPrefix(collection, "directus_") {
		// A change of access (see systemEvents): only which keys changed
		// matters, and the payload may hold a password or a token in the
		// clear (users.create, users.update): it is dropped here, before
		// it could reach a log, Redis or the history.
		e.Payload = nil
		return e, nil
	}
	if action == broker.ActionUpdate && (len(e.Payload) == 0 || e.Payload[0] != '{') {
		return broker.Event{}, &NotEventError{"update payload must be an object of the changed fields"}
	}
	return e, nil
}

// systemEvents are the system collections whose events the broker takes
// (they change who may read what) by the event's prefix: users.update
// comes from directus_users. A Flow fires them when its collections list
// the system collection (flow install does so).
var systemEvents = map[string]string{
	"users": "directus_users", "roles": "directus_roles", "policies": "directus_policies",
	"access": "directus_access", "permissions": "directus_permissions", "relations": "directus_relations",
}

// actionOf reads the action and collection from "event" ("items.create",
// "<collection>.items.create", "users.update") or "action".
func actionOf(b webhookBody) (broker.Action, string, error) {
	collection := b.Collection
	switch {
	case b.Event != nil:
		ev := *b.Event
		if prefix, action, ok := strings.Cut(ev, "."); ok && systemEvents[prefix] != "" && !strings.Contains(action, ".") {
			a := broker.Action(action)
			if !a.Valid() {
				return "", "", fmt.Errorf("event %q: action %q is not create, update or delete", ev, action)
			}
			if collection != "" && collection != systemEvents[prefix] {
				return "", "", fmt.Errorf("event %q does not match collection %q", ev, collection)
			}
			return a, systemEvents[prefix], nil
		}
		i := strings.LastIndex(ev, "items.")
		if i < 0 {
			return "", "", fmt.Errorf("event %q is not an item event (items.create, items.update or items.delete)", ev)
		}
		prefix, action := ev[:i], ev[i+len("items."):]
		if strings.Contains(action, ".") {
			return "", "", fmt.Errorf("event %q is not an item event (items.create, items.update or items.delete)", ev)
		}
		if prefix != "" {
			scoped := strings.TrimSuffix(prefix, ".")
			if scoped == prefix {
				return "", "", fmt.Errorf("event %q is not an item event", ev)
			}
			if collection == "" {
				collection = scoped
			} else if collection != scoped {
				return "", "", fmt.Errorf("event %q does not match collection %q", ev, collection)
			}
		}
		a := broker.Action(action)
		if !a.Valid() {
			return "", "", fmt.Errorf("event %q: action %q is not create, update or delete", ev, action)
		}
		return a, collection, nil
	case b.Action != nil:
		a := broker.Action(strings.ToLower(*b.Action))
		if !a.Valid() {
			return "", "", fmt.Errorf("action %q is not create, update or delete", *b.Action)
		}
		return a, collection, nil
	}
	return "", "", errors.New(`neither "event" nor "action" present: not an item event`)
}

// keysOf reads "keys" (array) or "key" (scalar) as strings; a delete may
// carry its keys only as the payload.
func keysOf(b webhookBody, action broker.Action) ([]string, []json.RawMessage, error) {
	var raw []json.RawMessage
	switch {
	case len(b.Keys) > 0 && string(b.Keys) != "null":
		if err := json.Unmarshal(b.Keys, &raw); err != nil {
			return nil, nil, errors.New(`"keys" must be an array`)
		}
	case len(b.Key) > 0 && string(b.Key) != "null":
		raw = []json.RawMessage{b.Key}
	case action == broker.ActionDelete && len(b.Payload) > 0 && b.Payload[0] == '[':
		if err := json.Unmarshal(b.Payload, &raw); err != nil {
			return nil, nil, errors.New(`delete payload must be an array of keys`)
		}
	}
	if len(raw) == 0 {
		return nil, nil, fmt.Errorf(`%s event without "key" or "keys"`, action)
	}
	keys := make([]string, len(raw))
	for i, r := range raw {
		k, err := keyString(r)
		if err != nil {
			return nil, nil, err
		}
		keys[i] = k
		raw[i] = bytes.TrimSpace(r)
	}
	return keys, raw, nil
}

// keyString renders a primary key (number or string) as a string, numbers
// exactly as written.
func keyString(r json.RawMessage) (string, error) {
	r = bytes.TrimSpace(r)
	if len(r) == 0 {
		return "", errors.New("empty key")
	}
	switch r[0] {
	case '"':
		var s string
		if err := json.Unmarshal(r, &s); err != nil || s == "" {
			return "", errors.New("keys must be non-empty strings or numbers")
		}
		return s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return string(r), nil
	}
	return "", fmt.Errorf("key %s: keys must be strings or numbers", r)
}

// fieldTypes says which field of a body has the wrong type, in the broker's
// words (the decoder's own error names Go types and struct fields).
func fieldTypes(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		want := map[string]string{"event": "a string", "action": "a string", "collection": "a string", "keys": "an array of keys"}[te.Field]
		if want == "" {
			want = "of another type"
		}
		return fmt.Sprintf("%q must be %s", te.Field, want)
	}
	return "the body is not an event object (event, collection, payload, key or keys)"
}
