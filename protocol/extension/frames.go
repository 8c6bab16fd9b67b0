package extension

import (
	"encoding/json"
	"strings"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/protocol"
	"github.com/directus-ws-broker/directus-ws-broker/session"
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

// parseFrame decodes a client frame. On error the uid is still returned
// when it could be read, so the ERROR frame can echo it.
func parseFrame(msg []byte) (frame, *session.Error) {
	var f frame
	if err := json.Unmarshal(msg, &f); err != nil {
		// Try to recover the uid from an otherwise bad frame.
		var u struct {
			UID json.RawMessage `json:"uid"`
		}
		_ = json.Unmarshal(msg, &u)
		f.UID = u.UID
		if !json.Valid(msg) {
			return f, session.Invalid("frame is not valid JSON")
		}
		return f, session.Invalid("frame must be a JSON object with the documented field types")
	}
	f.Type = strings.ToLower(strings.TrimSpace(f.Type))
	if f.Type == "" {
		return f, session.Invalid(`"type" missing`)
	}
	return f, nil
}

// actions reads the optional "event" filter: "create" or ["create","update"].
func (f frame) actions() (broker.ActionSet, *session.Error) {
	if !protocol.HasValue(f.Event) {
		return 0, nil
	}
	var list []string
	var one string
	if json.Unmarshal(f.Event, &one) == nil {
		list = []string{one}
	} else if json.Unmarshal(f.Event, &list) != nil {
		return 0, session.Invalid(`"event" must be an action or a list of actions`)
	}
	var set broker.ActionSet
	for _, a := range list {
		act := broker.Action(strings.ToLower(a))
		if !act.Valid() {
			return 0, session.Invalid(`"event" must be create, update or delete`)
		}
		set = set.With(act)
	}
	return set, nil
}

// The frames the broker sends in the extension protocol.

func response(data json.RawMessage, uid json.RawMessage) []byte {
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b := make([]byte, 0, len(data)+64)
	b = append(b, `{"type":"RESPONSE","data":`...)
	b = append(b, data...)
	return protocol.CloseWithUID(b, uid)
}

// errorFrame is {"type":"ERROR","data":{status,code,message[,collection]},"uid"}:
// collection names the subscription an error is about.
func errorFrame(e *session.Error, uid json.RawMessage, collection string) []byte {
	data, _ := json.Marshal(struct {
		*session.Error
		Collection string `json:"collection,omitempty"`
	}{e, collection})
	b := make([]byte, 0, len(data)+64)
	b = append(b, `{"type":"ERROR","data":`...)
	b = append(b, data...)
	return protocol.CloseWithUID(b, uid)
}

// typed is a frame of the given type with extra fields.
func typed(typ string, fields map[string]any, uid json.RawMessage) []byte {
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

// Encoder encodes a subscription's frames in the extension protocol.
type Encoder struct{}

var _ broker.Encoder = Encoder{}

// Event implements broker.Encoder.
func (Encoder) Event(d *broker.Delivery, uid json.RawMessage) []byte {
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
	return protocol.CloseWithUID(b, uid)
}

// Ack implements broker.Encoder: SUBSCRIBED is the success signal.
func (Encoder) Ack(s *broker.Subscription, _ bool) []byte {
	return typed("SUBSCRIBED", map[string]any{"collection": s.Collection}, s.UID)
}

// Init implements broker.Encoder.
func (Encoder) Init(s *broker.Subscription, data json.RawMessage) []byte {
	return typed("SUBSCRIPTION", map[string]any{"action": "init", "collection": s.Collection, "data": data}, s.UID)
}

// Notice implements broker.Encoder.
func (Encoder) Notice(s *broker.Subscription, n broker.Notice) []byte {
	status := 503
	switch n.Code {
	case "HISTORY_GAP":
		status = 410
	case "TOKEN_EXPIRED":
		status = 401
	}
	data := map[string]any{
		"status": status, "code": n.Code, "message": n.Message, "collection": s.Collection, "event_id": n.EventID, "count": n.Count,
	}
	if n.IDs != nil {
		data["event_ids"] = n.IDs
	}
	return typed("ERROR", map[string]any{"data": data}, s.UID)
}
