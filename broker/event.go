package broker

import (
	"encoding/json"
	"fmt"
	"time"
)

// Action is what happened to the items of an event.
type Action string

// The actions Directus reports for items.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
)

// Valid reports whether a is one of the three item actions.
func (a Action) Valid() bool {
	return a == ActionCreate || a == ActionUpdate || a == ActionDelete
}

// Event is one normalized item event: what a Flow or webhook posted, in the
// shape subscribers know from the original extension.
type Event struct {
	// ID orders the event within its collection; the bus assigns it.
	ID         string          `json:"id,omitempty"`
	Action     Action          `json:"action"`
	Collection string          `json:"collection"`
	Keys       []string        `json:"keys"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	// RawKeys are the keys as Directus wrote them (numbers stay numbers),
	// one per key, when known: a delete's frame repeats them as Directus's
	// own realtime does.
	RawKeys []json.RawMessage `json:"raw_keys,omitempty"`
	// Received is when the webhook took the event (the instance that took
	// it, with BUS=redis): the broker's own latency is measured from it.
	Received time.Time `json:"received,omitzero"`
}

// Validate reports what makes e unusable, or nil.
func (e Event) Validate() error {
	if !e.Action.Valid() {
		return fmt.Errorf("action %q is not create, update or delete", e.Action)
	}
	if err := ValidateCollection(e.Collection); err != nil {
		return err
	}
	if e.Keys == nil {
		return fmt.Errorf("keys missing")
	}
	return nil
}

// ValidateCollection refuses names that are not plain Directus collection
// names. Together with path escaping this keeps a client-chosen collection
// from steering a request to another Directus endpoint ("../users").
func ValidateCollection(name string) error {
	if name == "" {
		return fmt.Errorf("collection missing")
	}
	if len(name) > 64 {
		return fmt.Errorf("collection name longer than 64 characters")
	}
	for _, r := range name {
		ok := r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("collection %q: only letters, digits, _ and - are allowed", name)
		}
	}
	return nil
}
