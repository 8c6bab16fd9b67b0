package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
)

// Collection checks a collection name a client sent: a malformed name
// ("../users") is an *Error wrapping ErrCollectionName (400); a system
// collection (directus_*) is ErrInvalidCollection: their item events never
// reach the broker, and Directus serves them elsewhere than /items.
func Collection(name *string) (string, error) {
	if name == nil {
		return "", Invalid(`"collection" missing`)
	}
	if err := broker.ValidateCollection(*name); err != nil {
		return "", &Error{Status: http.StatusBadRequest, Code: "INVALID_PAYLOAD", Message: err.Error(), cause: ErrCollectionName}
	}
	if strings.HasPrefix(*name, "directus_") {
		return "", ErrInvalidCollection
	}
	return *name, nil
}

// ErrCollectionName is wrapped by Collection's error for a malformed name.
var ErrCollectionName = errors.New("malformed collection name")

// ItemID renders a JSON id (string or number) as a path segment.
func ItemID(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	var s string
	switch {
	case len(raw) == 0:
		return "", Invalid("id missing")
	case raw[0] == '"':
		if json.Unmarshal(raw, &s) != nil {
			return "", Invalid("id must be a string or a number")
		}
	default:
		if _, err := strconv.ParseFloat(string(raw), 64); err != nil {
			return "", Invalid("id must be a string or a number")
		}
		s = string(raw)
	}
	if s == "" || s == "." || s == ".." {
		return "", Invalid("id must not be empty, . or ..")
	}
	return s, nil
}

// optionalID reads an optional item id; ok is false when there is none.
func optionalID(raw json.RawMessage) (id string, ok bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false, nil
	}
	id, err = ItemID(raw)
	return id, err == nil, err
}

// itemIDs checks ids and keeps them as JSON values, numbers as numbers.
func itemIDs(raw []json.RawMessage) ([]json.RawMessage, error) {
	for _, id := range raw {
		if _, err := ItemID(id); err != nil {
			return nil, err
		}
	}
	return raw, nil
}

// UIDString is a uid as Directus keys subscriptions by it: String(uid) of
// a JSON string or number. ok is false for other JSON.
func UIDString(uid json.RawMessage) (string, bool) {
	if len(uid) == 0 {
		return "", false
	}
	if uid[0] == '"' {
		var s string
		err := json.Unmarshal(uid, &s)
		return s, err == nil
	}
	v, err := strconv.ParseFloat(string(uid), 64)
	if err != nil {
		return "", false
	}
	return strconv.FormatFloat(v, 'f', -1, 64), true
}

// listQueryParams are the query keys the SDK sends comma-joined.
var listQueryParams = map[string]bool{"fields": true, "sort": true, "groupBy": true}

// jsonQueryParams are the query keys the SDK sends as JSON text.
var jsonQueryParams = map[string]bool{"filter": true, "deep": true, "alias": true, "aggregate": true}

// numberQueryParams are the query keys the SDK sends as decimal strings.
var numberQueryParams = map[string]bool{"limit": true, "offset": true, "page": true}

// Query turns a query given as an object or in the SDK's REST form
// ({"fields":"id,title","filter":"{...}","limit":"10"}) into one canonical
// object, so both forms share a group (one read per event) and a Directus
// query string. Keys whose value is null are dropped: they are never sent to
// Directus, so keeping them would only cost memory and split groups.
func Query(raw json.RawMessage) (broker.Query, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var q broker.Query
	if err := json.Unmarshal(raw, &q); err != nil {
		return nil, Invalid(`"query" must be an object`)
	}
	for key, v := range q {
		if v == nil {
			delete(q, key)
			continue
		}
		s, isString := v.(string)
		if !isString {
			continue
		}
		switch {
		case listQueryParams[key]:
			var parts []any
			for _, p := range strings.Split(s, ",") {
				if p = strings.TrimSpace(p); p != "" {
					parts = append(parts, p)
				}
			}
			q[key] = parts
		case jsonQueryParams[key]:
			var parsed any
			if err := json.Unmarshal([]byte(s), &parsed); err != nil {
				return nil, Invalid(`"query.` + key + `" must be an object or its JSON text`)
			}
			q[key] = parsed
		case numberQueryParams[key]:
			n, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return nil, Invalid(`"query.` + key + `" must be a number`)
			}
			q[key] = n
		}
	}
	if len(q) == 0 {
		return nil, nil
	}
	if v, err := directus.QueryValues(q); err != nil {
		return nil, Invalid(err.Error())
	} else if n := len(v.Encode()); n > MaxQueryURL {
		return nil, Invalid(fmt.Sprintf(`"query" is too large to send to Directus: %d bytes in the URL, at most %d`, n, MaxQueryURL))
	}
	return q, nil
}

// MaxQueryURL bounds a query's size in a Directus request URL: Directus
// (Node.js) refuses request heads over 16 KiB (431), which the broker would
// otherwise find out only at Directus, for every event.
const MaxQueryURL = 14 << 10

// Since checks a resume id.
func Since(id string) error {
	if id != "" && !broker.ValidID(id) {
		return Invalid(`"since" must be an event id ("<ms>-<seq>") from an earlier event`)
	}
	return nil
}
