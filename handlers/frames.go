package handlers

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// frame is a client frame of the extension protocol. Unknown fields are
// ignored; type is case-insensitive.
type frame struct {
	Type       string            `json:"type"`
	UID        json.RawMessage   `json:"uid"`
	Collection *string           `json:"collection"`
	Query      json.RawMessage   `json:"query"`
	ID         json.RawMessage   `json:"id"`
	IDs        []json.RawMessage `json:"ids"`
	Data       json.RawMessage   `json:"data"`
	Event      json.RawMessage   `json:"event"`
	Init       bool              `json:"init"`
	Since      string            `json:"since"`
	// AccessToken renews the connection's token (type "auth").
	AccessToken string `json:"access_token"`
}

// parseFrame decodes a client frame. On error the uid is still returned when
// it could be read, so the ERROR frame can echo it.
func parseFrame(msg []byte) (frame, *apiError) {
	var f frame
	if err := json.Unmarshal(msg, &f); err != nil {
		// Try to recover the uid from an otherwise bad frame.
		var u struct {
			UID json.RawMessage `json:"uid"`
		}
		_ = json.Unmarshal(msg, &u)
		f.UID = u.UID
		if !json.Valid(msg) {
			return f, badRequest("frame is not valid JSON")
		}
		return f, badRequest("frame must be a JSON object with the documented field types")
	}
	f.Type = strings.ToLower(strings.TrimSpace(f.Type))
	if f.Type == "" {
		return f, badRequest(`"type" missing`)
	}
	return f, nil
}

// collection returns the validated collection of f.
func (f frame) collection() (string, *apiError) {
	if f.Collection == nil {
		return "", badRequest(`"collection" missing`)
	}
	if err := broker.ValidateCollection(*f.Collection); err != nil {
		return "", badRequest(err.Error())
	}
	return *f.Collection, nil
}

// query decodes f.query as an object (or nil).
func (f frame) query() (broker.Query, *apiError) {
	if len(f.Query) == 0 || string(f.Query) == "null" {
		return nil, nil
	}
	var q broker.Query
	if err := json.Unmarshal(f.Query, &q); err != nil {
		return nil, badRequest(`"query" must be an object`)
	}
	return q, nil
}

// itemID renders a JSON id (string or number) as a path segment.
func itemID(raw json.RawMessage) (string, *apiError) {
	raw = bytes.TrimSpace(raw)
	var s string
	switch {
	case len(raw) == 0:
		return "", badRequest("id missing")
	case raw[0] == '"':
		if json.Unmarshal(raw, &s) != nil {
			return "", badRequest("id must be a string or a number")
		}
	default:
		if _, err := strconv.ParseFloat(string(raw), 64); err != nil {
			return "", badRequest("id must be a string or a number")
		}
		s = string(raw)
	}
	if s == "" || s == "." || s == ".." {
		return "", badRequest("id must not be empty, . or ..")
	}
	return s, nil
}

// actions reads the optional "event" filter: "create" or ["create","update"].
func (f frame) actions() (broker.ActionSet, *apiError) {
	if len(f.Event) == 0 || string(f.Event) == "null" {
		return 0, nil
	}
	var list []string
	var one string
	if json.Unmarshal(f.Event, &one) == nil {
		list = []string{one}
	} else if json.Unmarshal(f.Event, &list) != nil {
		return 0, badRequest(`"event" must be an action or a list of actions`)
	}
	var set broker.ActionSet
	for _, a := range list {
		act := broker.Action(strings.ToLower(a))
		if !act.Valid() {
			return 0, badRequest(`"event" must be create, update or delete`)
		}
		set = set.With(act)
	}
	return set, nil
}

// The frames the broker sends in the extension protocol.

func responseFrame(data json.RawMessage, uid json.RawMessage) []byte {
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b := make([]byte, 0, len(data)+64)
	b = append(b, `{"type":"RESPONSE","data":`...)
	b = append(b, data...)
	return closeWithUID(b, uid)
}

func errorFrame(e *apiError, uid json.RawMessage) []byte {
	data, _ := json.Marshal(e)
	b := make([]byte, 0, len(data)+64)
	b = append(b, `{"type":"ERROR","data":`...)
	b = append(b, data...)
	return closeWithUID(b, uid)
}

// typedFrame is a frame of the given type with extra fields.
func typedFrame(typ string, fields map[string]any, uid json.RawMessage) []byte {
	m := make(map[string]any, len(fields)+2)
	for k, v := range fields {
		m[k] = v
	}
	m["type"] = typ
	if len(uid) > 0 {
		m["uid"] = uid
	}
	b, _ := json.Marshal(m)
	return b
}

func closeWithUID(b []byte, uid json.RawMessage) []byte {
	if len(uid) > 0 {
		b = append(b, `,"uid":`...)
		b = append(b, uid...)
	}
	return append(b, '}')
}

// legacyEncoder encodes deliveries as the extension's SUBSCRIPTION frames.
type legacyEncoder struct{}

var _ broker.Encoder = legacyEncoder{}

// Event implements broker.Encoder.
func (legacyEncoder) Event(d *broker.Delivery, uid json.RawMessage) []byte {
	keys, _ := json.Marshal(d.Keys)
	b := make([]byte, 0, 96+len(d.Event.Collection)+len(keys)+len(d.Payload)+len(d.Data)+len(uid))
	b = append(b, `{"type":"SUBSCRIPTION","action":"`...)
	b = append(b, d.Event.Action...)
	b = append(b, `","collection":"`...)
	b = append(b, d.Event.Collection...) // validated: letters, digits, _ and -
	b = append(b, `","keys":`...)
	b = append(b, keys...)
	b = append(b, `,"payload":`...)
	b = append(b, d.Payload...)
	b = append(b, `,"data":`...)
	b = append(b, d.Data...)
	if d.Event.ID != "" {
		b = append(b, `,"id":"`...)
		b = append(b, d.Event.ID...) // "<ms>-<seq>": no escaping needed
		b = append(b, '"')
	}
	return closeWithUID(b, uid)
}

// Init implements broker.Encoder.
func (legacyEncoder) Init(s *broker.Subscription, data json.RawMessage) []byte {
	return typedFrame("SUBSCRIPTION", map[string]any{"action": "init", "collection": s.Collection, "data": data}, s.UID)
}

// Notice implements broker.Encoder.
func (legacyEncoder) Notice(s *broker.Subscription, n broker.Notice) []byte {
	status := 503
	if n.Code == "HISTORY_GAP" {
		status = 410
	} else if n.Code == "TOKEN_EXPIRED" {
		status = 401
	}
	return typedFrame("ERROR", map[string]any{"data": map[string]any{
		"status": status, "code": n.Code, "message": n.Message, "collection": s.Collection, "event_id": n.EventID, "count": n.Count,
	}}, s.UID)
}
