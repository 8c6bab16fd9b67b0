package directus

import (
	"reflect"
	"testing"
)

func TestUserDepOf(t *testing.T) {
	cases := []struct {
		rule     string
		identity bool
		fields   []string
	}{
		{`{}`, false, nil},
		{`{"status":{"_eq":"published"}}`, false, nil},
		{`{"owner":{"_eq":"$CURRENT_USER"}}`, true, nil},
		{`{"owner":{"_eq":"$CURRENT_USER.id"}}`, true, nil},
		{`{"team":{"_eq":"$CURRENT_USER.team"}}`, false, []string{"team"}},
		{`{"_and":[{"team":{"_eq":"$CURRENT_USER.team"}},{"org":{"_in":["$CURRENT_USER.org"]}}]}`, false, []string{"org", "team"}},
		{`{"_or":[{"team":{"_eq":"$CURRENT_USER.team"}},{"owner":{"_eq":"$CURRENT_USER"}}]}`, true, []string{"team"}},
		// A path through a relation of the user: its value is not a field of
		// theirs the broker reads; so is a function.
		{`{"org":{"_eq":"$CURRENT_USER.team.org"}}`, true, nil},
		{`{"y":{"_eq":"$CURRENT_USER.year(date_created)"}}`, true, nil},
		// Mentioned inside another string, or as a key: cannot tell.
		{`{"x":{"_contains":"x $CURRENT_USER.team"}}`, true, nil},
		{`{"$CURRENT_USER.team":{"_eq":1}}`, true, nil},
		{`{"bad json $CURRENT_USER.team`, true, nil},
		{`{"k":{"_eq":"$CURRENT_USER.password"}}`, true, nil},
	}
	for _, c := range cases {
		d := userDepOf([]byte(c.rule))
		if d.identity != c.identity || !reflect.DeepEqual(d.fields, c.fields) {
			t.Errorf("%s: identity %v fields %v, want %v %v", c.rule, d.identity, d.fields, c.identity, c.fields)
		}
	}
}

// A rule on a field Directus conceals is per user: the service user would
// read the same mask for everyone.
func TestUserDepConcealed(t *testing.T) {
	if d := userDepOf([]byte(`{"k":{"_eq":"$CURRENT_USER.token"}}`)); !d.identity {
		t.Fatalf("token: %+v", d)
	}
	l := &roleLoader{roles: map[string]*string{}}
	l.setFields([]string{"code"})
	l.storeLocked("u", userRecord{"id": []byte(`"u"`), "code": []byte(concealed)})
	if _, ok := l.valuesOf("u", []string{"code"}); ok {
		t.Fatal("a concealed value shared by")
	}
}
