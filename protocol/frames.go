// Package protocol holds what the protocol codecs (its subpackages, one per
// protocol) share of their framing.
package protocol

import "encoding/json"

// CloseWithUID ends the JSON object b, adding "uid" when the request had
// one: every answer names the request it answers.
func CloseWithUID(b []byte, uid json.RawMessage) []byte {
	if len(uid) > 0 {
		b = append(b, `,"uid":`...)
		b = append(b, uid...)
	}
	return append(b, '}')
}

// HasValue reports whether raw is a JSON value other than null.
func HasValue(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }
