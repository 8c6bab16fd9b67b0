package session

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func subscribeQuery(s *Session, key, coll, query string) error {
	_, err := s.Subscribe(context.Background(), SubscribeRequest{Key: key, Collection: str(coll), Query: []byte(query), Encoder: textEncoder{}})
	return err
}

func filterOn(id int) string { return fmt.Sprintf(`{"filter":{"id":{"_eq":%d}}}`, id) }

// quotaRig is a rig whose sessions count against q.
func quotaRig(t *testing.T, q Quota) *rig {
	r := newRig(t, nil)
	r.deps.Limits.MaxSubscriptions = 100
	r.deps.Limits.Quota = q
	r.deps.Usage = NewUsage(q)
	r.deps.Failures = &Failures{}
	return r
}

// Distinct queries are bounded per connection and per user across its
// connections; the same query again costs nothing, and what a subscription
// held is given back when it ends.
func TestQueriesBounded(t *testing.T) {
	r := quotaRig(t, Quota{QueriesPerConnection: 3, QueriesPerUser: 4})
	r.dx.user("a", "ua", "c")
	s1, _ := r.session(t, "a")
	for i := range 3 {
		if err := subscribeQuery(s1, fmt.Sprint(i), "c", filterOn(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := subscribeQuery(s1, "same", "c", filterOn(0)); err != nil {
		t.Fatalf("a query the connection has already: %v", err)
	}
	if err := subscribeQuery(s1, "x", "c", filterOn(9)); !errors.Is(err, ErrTooManyQueries) {
		t.Fatalf("4th distinct query on one connection: want LIMIT_EXCEEDED, got %v", err)
	}
	s2, _ := r.session(t, "a")
	if err := subscribeQuery(s2, "0", "c", filterOn(0)); err != nil {
		t.Fatalf("a query the user has already, on another connection: %v", err)
	}
	if err := subscribeQuery(s2, "3", "c", filterOn(3)); err != nil {
		t.Fatalf("4th distinct query of the user: %v", err)
	}
	if err := subscribeQuery(s2, "4", "c", filterOn(4)); !errors.Is(err, ErrTooManyQueries) {
		t.Fatalf("5th distinct query of the user: want LIMIT_EXCEEDED, got %v", err)
	}
	if n := r.deps.Failures.Count("subscribe", "LIMIT_EXCEEDED"); n != 2 {
		t.Fatalf("counted %d refusals, want 2", n)
	}
	s1.Unsubscribe("1")
	if err := subscribeQuery(s2, "4", "c", filterOn(4)); err != nil {
		t.Fatalf("after an unsubscribe freed a query: %v", err)
	}
	s1.Close()
	s2.Close()
	if slots, users := r.deps.Usage.Held(); slots != 0 || users != 0 {
		t.Fatalf("still held after every connection closed: %d slots, %d users", slots, users)
	}
}

// The query text a connection keeps is bounded.
func TestQueryBytesBounded(t *testing.T) {
	r := quotaRig(t, Quota{QueryBytesPerConnection: 1000})
	r.dx.user("a", "ua", "c")
	s, _ := r.session(t, "a")
	big := fmt.Sprintf(`{"filter":{"title":{"_eq":%q}}}`, strings.Repeat("x", 400))
	if err := subscribeQuery(s, "1", "c", big); err != nil {
		t.Fatal(err)
	}
	if err := subscribeQuery(s, "2", "c", big); err != nil {
		t.Fatal(err)
	}
	if err := subscribeQuery(s, "3", "c", big); !errors.Is(err, ErrQueriesTooLarge) {
		t.Fatalf("past max_query_bytes: want LIMIT_EXCEEDED, got %v", err)
	}
	if err := subscribeQuery(s, "1", "c", `{}`); err != nil {
		t.Fatalf("replacing a big query with a small one: %v", err)
	}
}

// Connections are bounded per user and, without a user, per address; an
// auth moves the connection to its user's count.
func TestConnectionsBounded(t *testing.T) {
	r := quotaRig(t, Quota{ConnectionsPerUser: 2, AnonymousPerAddress: 1})
	r.dx.user("a", "ua", "c")
	r.dx.user("a2", "ua", "c")
	r.session(t, "a")
	r.session(t, "a2") // another token of the same user
	id, _ := r.dx.Validate(context.Background(), "a")
	if _, err := New(r.deps, fakeProto{}, newFakeConn(), Peer{Token: "a", ID: id, Addr: "192.0.2.1"}, nopLog); !errors.Is(err, ErrTooManyConnections) {
		t.Fatalf("3rd connection of the user: want TOO_MANY_CONNECTIONS, got %v", err)
	}
	anon, _ := r.session(t, "")
	if _, err := New(r.deps, fakeProto{}, newFakeConn(), Peer{Addr: "192.0.2.1"}, nopLog); !errors.Is(err, ErrTooManyAnonymous) {
		t.Fatalf("2nd anonymous connection from one address: want TOO_MANY_CONNECTIONS, got %v", err)
	}
	other, err := New(r.deps, fakeProto{}, newFakeConn(), Peer{Addr: "192.0.2.2"}, nopLog)
	if err != nil {
		t.Fatalf("another address: %v", err)
	}
	defer other.Close()
	if _, err := anon.Authenticate(context.Background(), "a"); !errors.Is(err, ErrTooManyConnections) {
		t.Fatalf("auth as a user with every connection taken: %v", err)
	}
	if anon.Token() != "" {
		t.Fatal("a refused auth changed the token")
	}
	r.dx.user("b", "ub", "c")
	if _, err := anon.Authenticate(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	again, err := New(r.deps, fakeProto{}, newFakeConn(), Peer{Addr: "192.0.2.1"}, nopLog)
	if err != nil {
		t.Fatalf("the address slot was not given back at auth: %v", err)
	}
	again.Close()
}

var nopLog = zerolog.Nop()
