package realtime

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
	"github.com/directus-ws-broker/directus-ws-broker/protocol"
	"github.com/directus-ws-broker/directus-ws-broker/session"
)

// frame is a client frame of Directus's realtime protocol. Only type
// and uid are common to all; the rest is read by the handler of the type.
type frame struct {
	Type string
	// UID is the client's identifier as sent (a JSON string or number).
	UID json.RawMessage
	// raw is the whole frame, decoded again by the type's handler.
	raw []byte

	// auth
	AccessToken, RefreshToken, Email, Password, OTP *string
}

// parseFrame checks what Directus checks of every frame: JSON, an
// object, a string type, a uid that is a string or a number. Its errors are
// ready-made frames of type "server".
func parseFrame(msg []byte) (frame, []byte) {
	var head map[string]json.RawMessage
	if err := json.Unmarshal(msg, &head); err != nil {
		if json.Valid(msg) {
			return frame{}, rtError("server", "INVALID_PAYLOAD", "Validation error: the message must be an object with a string \"type\".", nil)
		}
		return frame{}, rtError("server", "INVALID_PAYLOAD", "Unable to parse the incoming message.", nil)
	}
	f := frame{raw: msg}
	if err := json.Unmarshal(head["type"], &f.Type); err != nil || head["type"] == nil {
		return f, rtError("server", "INVALID_PAYLOAD", "Validation error: \"type\" must be a string.", nil)
	}
	if uid, ok := head["uid"]; ok {
		uid = bytes.TrimSpace(uid)
		if _, valid := session.UIDString(uid); !valid {
			return f, rtError("server", "INVALID_PAYLOAD", "Validation error: \"uid\" must be a string or a number.", nil)
		}
		f.UID = uid
	}
	if f.Type == "auth" {
		for key, dst := range map[string]**string{"access_token": &f.AccessToken, "refresh_token": &f.RefreshToken, "email": &f.Email, "password": &f.Password, "otp": &f.OTP} {
			var s string
			if v, ok := head[key]; ok && json.Unmarshal(v, &s) == nil {
				*dst = &s
			}
		}
	}
	return f, nil
}

// rtError is Directus's error frame: {"type","status":"error","error":{"code","message"},"uid"?}.
func rtError(typ, code, message string, uid json.RawMessage) []byte {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Status string `json:"status"`
		Error  struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
		UID json.RawMessage `json:"uid,omitempty"`
	}{Type: typ, Status: "error", Error: struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{code, message}, UID: uid})
	return b
}

// rtAPIError is an error frame for an error from Directus (or the broker's
// own checks), keeping Directus's code and message.
func rtAPIError(typ string, err error, uid json.RawMessage) []byte {
	if errors.Is(err, session.ErrCollectionName) {
		err = session.ErrInvalidCollection // Directus: a collection it does not have
	}
	ae := session.AsError(err)
	return rtError(typ, ae.Code, ae.Message, uid)
}

func rtPong(uid json.RawMessage) []byte {
	return protocol.CloseWithUID([]byte(`{"type":"pong"`), uid)
}

func rtAuthOK(uid json.RawMessage, refresh string) []byte {
	b, _ := json.Marshal(struct {
		Type         string          `json:"type"`
		Status       string          `json:"status"`
		UID          json.RawMessage `json:"uid,omitempty"`
		RefreshToken string          `json:"refresh_token,omitempty"`
	}{"auth", "ok", uid, refresh})
	return b
}

// rtSubscription is a {"type":"subscription","event",...} frame; data is
// left out when nil, uid when empty.
func rtSubscription(event string, data json.RawMessage, uid json.RawMessage) []byte {
	b := make([]byte, 0, 64+len(data)+len(uid))
	b = append(b, `{"type":"subscription","event":"`...)
	b = append(b, event...) // init, create, update, delete, unsubscribe
	b = append(b, '"')
	if data != nil {
		b = append(b, `,"data":`...)
		b = append(b, data...)
	}
	return protocol.CloseWithUID(b, uid)
}

// rtItems is the answer to an items frame.
func rtItems(data, meta json.RawMessage, uid json.RawMessage) []byte {
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b := make([]byte, 0, 48+len(data)+len(meta)+len(uid))
	b = append(b, `{"type":"items","data":`...)
	b = append(b, data...)
	if len(meta) > 0 && string(meta) != "null" {
		b = append(b, `,"meta":`...)
		b = append(b, meta...)
	}
	return protocol.CloseWithUID(b, uid)
}

// Encoder encodes deliveries as Directus's subscription frames. Its
// uid is the subscription's uid as a JSON string (Directus stringifies it).
// item, when set, restricts a subscription to one item, as Directus's
// subscribe {"item"}: its data is then that item's object (its key for
// deletes), not an array.
type Encoder struct {
	item string
	// ids adds "event_id" to event frames (the subscribe asked for them
	// with event_ids or since).
	ids bool
}

var _ broker.Encoder = Encoder{}

// Event implements broker.Encoder: byte for byte Directus's frame, plus
// "event_id" (the broker's event id, for resuming with "since") when the
// subscription asked for it. It returns nil when an item subscription's
// item is not in d.
func (e Encoder) Event(d *broker.Delivery, uid json.RawMessage) []byte {
	data := d.Data
	if d.Event.Action == broker.ActionDelete && d.RawKeys != nil {
		data = d.RawKeys // as Directus writes them: numbers stay numbers
	}
	if e.item != "" {
		data = itemOf(d, e.item)
		if data == nil {
			return nil
		}
	}
	b := make([]byte, 0, 96+len(data)+len(uid))
	b = append(b, `{"type":"subscription","event":"`...)
	b = append(b, d.Event.Action...)
	b = append(b, `","data":`...)
	b = append(b, data...)
	if e.ids && d.Event.ID != "" {
		b = append(b, `,"event_id":"`...)
		b = append(b, d.Event.ID...) // "<ms>-<seq>": no escaping needed
		b = append(b, '"')
	}
	return protocol.CloseWithUID(b, uid)
}

// itemOf is item's part of d: its object, or its key (a JSON string) for a
// delete; nil when d does not concern it.
func itemOf(d *broker.Delivery, item string) json.RawMessage {
	idx := -1
	for i, k := range d.Keys {
		if k == item {
			idx = i
			break
		}
	}
	if idx < 0 {
		return nil
	}
	if d.Event.Action == broker.ActionDelete {
		b, _ := json.Marshal(item)
		return b
	}
	var items []json.RawMessage
	if json.Unmarshal(d.Data, &items) != nil || idx >= len(items) {
		return nil
	}
	return items[idx]
}

// Ack implements broker.Encoder: without a snapshot, Directus's init frame
// carries no data; with one, the Init frame is the first.
func (e Encoder) Ack(s *broker.Subscription, snapshot bool) []byte {
	if snapshot {
		return nil
	}
	return rtSubscription("init", nil, s.UID)
}

// Init implements broker.Encoder.
func (e Encoder) Init(s *broker.Subscription, data json.RawMessage) []byte {
	if len(data) == 0 || string(data) == "null" {
		data = json.RawMessage("[]")
	}
	return rtSubscription("init", data, s.UID)
}

// Notice implements broker.Encoder. Directus has no such frame; a type of
// its own keeps the SDK's subscription loops (which throw on
// {"type":"subscribe","status":"error"}) alive, while clients that resume
// with "since" can listen for it.
func (e Encoder) Notice(s *broker.Subscription, n broker.Notice) []byte {
	b, _ := json.Marshal(struct {
		Type       string          `json:"type"`
		Code       string          `json:"code"`
		Message    string          `json:"message"`
		Collection string          `json:"collection"`
		EventID    string          `json:"event_id,omitempty"`
		Count      int             `json:"count,omitempty"`
		EventIDs   []string        `json:"event_ids,omitempty"`
		UID        json.RawMessage `json:"uid,omitempty"`
	}{"notice", n.Code, n.Message, s.Collection, n.EventID, n.Count, n.IDs, s.UID})
	return b
}
