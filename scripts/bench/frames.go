package main

import "bytes"

// Each scenario sends events whose item key is a number the tracker chose,
// so a received frame is matched to its event by that key alone: no JSON
// decoding, no map lookup, and the key is known before the event is sent
// (the broker's own event id only comes back in the webhook's answer,
// which can arrive after the first deliveries).

var (
	brokerKeys     = []byte(`"keys":[`)
	directusUpdate = []byte(`"event":"update"`)
	directusData   = []byte(`"data":[`)
	idField        = []byte(`"id":`)
	eventsMissed   = []byte(`"EVENTS_MISSED"`)
)

// brokerKey returns the first key of a broker SUBSCRIPTION frame:
// {"type":"SUBSCRIPTION","action":"update","collection":"c","keys":["12"],...}.
// The keys come before payload and data in the broker's frames, so the
// first "keys":[ is the frame's own. Keys are strings from the webhook
// ("12") and may be numbers from other senders (12); both are read.
func brokerKey(msg []byte) (int, bool) {
	i := bytes.Index(msg, brokerKeys)
	if i < 0 {
		return 0, false
	}
	return leadingInt(msg[i+len(brokerKeys):])
}

// directusKey returns the id of the first item of a Directus realtime update:
// {"type":"subscription","event":"update","data":[{"id":12,...}],"uid":"s"}.
// Other frames (init, ping, auth) give false.
func directusKey(msg []byte) (int, bool) {
	if !bytes.Contains(msg, directusUpdate) {
		return 0, false
	}
	d := bytes.Index(msg, directusData)
	if d < 0 {
		return 0, false
	}
	rest := msg[d+len(directusData):]
	i := bytes.Index(rest, idField)
	if i < 0 {
		return 0, false
	}
	return leadingInt(rest[i+len(idField):])
}

// leadingInt parses the non-negative integer at the start of b, allowing
// spaces and one pair of quotes around it. It refuses numbers of more than
// 18 digits (no overflow) and anything that is not all digits.
func leadingInt(b []byte) (int, bool) {
	b = bytes.TrimLeft(b, " ")
	quoted := len(b) > 0 && b[0] == '"'
	if quoted {
		b = b[1:]
	}
	n, digits := 0, 0
	for _, c := range b {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
		digits++
		if digits > 18 {
			return 0, false
		}
	}
	if digits == 0 {
		return 0, false
	}
	if rest := b[digits:]; quoted && (len(rest) == 0 || rest[0] != '"') {
		return 0, false
	}
	return n, true
}

var graphqlKey = []byte(`"key":`)

// graphQLKey returns the key of a GraphQL next message:
// {"id":"s","type":"next","payload":{"data":{"c_mutated":{"key":"12",...}}}}
// (an ID: a string). Other messages (pong, error) give false.
func graphQLKey(msg []byte) (int, bool) {
	i := bytes.Index(msg, graphqlKey)
	if i < 0 {
		return 0, false
	}
	return leadingInt(msg[i+len(graphqlKey):])
}
