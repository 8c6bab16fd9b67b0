package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// subscriber is one extension-protocol subscription that keeps the account of
// what reached it: every event id, every EVENTS_MISSED (listed ids or a
// count), history gaps, and how the connection ended.
type subscriber struct {
	ws         *websocket.Conn
	collection string

	mu        sync.Mutex
	got       map[string]time.Time
	dups      int
	missedIDs map[string]bool // events reported missed by id
	// starts are the EVENTS_MISSED notices without ids, by first event:
	// a count, or 0 for "from this one until events arrive again".
	starts    map[string]int
	gaps      int
	others    []string // other ERROR codes
	closeCode int

	acked  chan error
	closed chan struct{}
	// onEvent, when set, is told of every event as it arrives.
	onEvent func(id string, at time.Time)
}

var dialer = websocket.Dialer{HandshakeTimeout: 10 * time.Second}

// subscribe connects to url with token and subscribes to collection
// (resuming after since when not empty) with query (nil: none). It returns
// once SUBSCRIBED arrived, or the error frame instead.
func subscribe(ctx context.Context, url, token, collection, since string, query any, onEvent func(string, time.Time)) (*subscriber, error) {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	ws, resp, err := dialer.DialContext(ctx, url, h)
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %d", resp.StatusCode)
		}
		return nil, err
	}
	s := &subscriber{ws: ws, collection: collection, got: map[string]time.Time{}, missedIDs: map[string]bool{}, starts: map[string]int{},
		acked: make(chan error, 1), closed: make(chan struct{}), onEvent: onEvent}
	go s.read()
	frame := map[string]any{"type": "subscribe", "collection": collection, "uid": "s"}
	if since != "" {
		frame["since"] = since
	}
	if query != nil {
		frame["query"] = query
	}
	if err := ws.WriteJSON(frame); err != nil {
		ws.Close()
		return nil, err
	}
	select {
	case err := <-s.acked:
		if err != nil {
			ws.Close()
			return nil, err
		}
		return s, nil
	case <-s.closed:
		return nil, fmt.Errorf("closed before SUBSCRIBED (code %d)", s.closeCode)
	case <-time.After(30 * time.Second):
		ws.Close()
		return nil, errors.New("no SUBSCRIBED within 30s")
	case <-ctx.Done():
		ws.Close()
		return nil, ctx.Err()
	}
}

// frame is what the subscriber reads of a server frame.
type frame struct {
	Type string          `json:"type"`
	ID   string          `json:"id"`
	UID  any             `json:"uid"`
	Raw  json.RawMessage `json:"data"`
	// Data is Raw decoded, for ERROR frames.
	Data struct {
		Code     string   `json:"code"`
		EventID  string   `json:"event_id"`
		Status   int      `json:"status"`
		Count    int      `json:"count"`
		EventIDs []string `json:"event_ids"`
	} `json:"-"`
}

func (s *subscriber) read() {
	defer close(s.closed)
	for {
		_, msg, err := s.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			s.mu.Lock()
			s.closeCode = websocket.CloseAbnormalClosure
			if errors.As(err, &ce) {
				s.closeCode = ce.Code
			}
			s.mu.Unlock()
			return
		}
		now := time.Now()
		var f frame
		if json.Unmarshal(msg, &f) != nil {
			continue
		}
		if f.Type == "ERROR" {
			_ = json.Unmarshal(f.Raw, &f.Data)
		}
		switch {
		case f.Type == "SUBSCRIBED":
			s.acked <- nil
		case f.Type == "SUBSCRIPTION":
			s.mu.Lock()
			if _, seen := s.got[f.ID]; seen {
				s.dups++
			} else {
				s.got[f.ID] = now
			}
			s.mu.Unlock()
			if s.onEvent != nil {
				s.onEvent(f.ID, now)
			}
		case f.Type == "ERROR" && f.Data.Code == "EVENTS_MISSED":
			s.mu.Lock()
			for _, id := range f.Data.EventIDs {
				s.missedIDs[id] = true
			}
			if rest := f.Data.Count - len(f.Data.EventIDs); len(f.Data.EventIDs) == 0 || rest > 0 {
				s.starts[f.Data.EventID] += max(rest, 0)
			}
			s.mu.Unlock()
		case f.Type == "ERROR" && f.Data.Code == "HISTORY_GAP":
			s.mu.Lock()
			s.gaps++
			s.mu.Unlock()
		case f.Type == "ERROR":
			select {
			case s.acked <- fmt.Errorf("%s (%d) uid=%v", f.Data.Code, f.Data.Status, f.UID):
			default:
			}
			s.mu.Lock()
			s.others = append(s.others, f.Data.Code)
			s.mu.Unlock()
		}
	}
}

func (s *subscriber) close() { s.ws.Close() }

// account is what one subscriber got of the events acknowledged for its
// collection while it was subscribed.
type account struct {
	acked, delivered, listed, counted, lost, dups int
}

// reckon checks acked against what s received. An event not delivered must
// be listed by id in a notice, or covered by a notice's count from its
// first event on, or fall in a run a notice opened ("from this event until
// events arrive again"); anything else is lost.
func (s *subscriber) reckon(acked []string) account {
	acked = slices.Clone(acked)
	slices.SortFunc(acked, broker.CompareIDs)
	s.mu.Lock()
	defer s.mu.Unlock()
	a := account{acked: len(acked), dups: s.dups}
	pending, inRun := 0, false
	for _, id := range acked {
		if n, ok := s.starts[id]; ok {
			if n == 0 {
				inRun = true
			}
			pending += n
		}
		switch {
		case !s.got[id].IsZero():
			a.delivered++
			inRun = false
		case s.missedIDs[id]:
			a.listed++
		case pending > 0:
			pending--
			a.counted++
		case inRun:
			a.counted++
		default:
			a.lost++
		}
	}
	return a
}

// total adds up accounts.
func total(accounts []account) account {
	var t account
	for _, a := range accounts {
		t.acked += a.acked
		t.delivered += a.delivered
		t.listed += a.listed
		t.counted += a.counted
		t.lost += a.lost
		t.dups += a.dups
	}
	return t
}

func (a account) String() string {
	return fmt.Sprintf("%d acknowledged subscriber-events: %d delivered, %d reported missed by id, %d by notice, %d lost, %d duplicates",
		a.acked, a.delivered, a.listed, a.counted, a.lost, a.dups)
}
