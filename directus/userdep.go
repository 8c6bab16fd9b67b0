package directus

import (
	"encoding/json"
	"slices"
	"strings"
)

// userDep is how the read rules a read can meet depend on the user making
// it. Directus replaces $CURRENT_USER by the user's id and
// $CURRENT_USER.<field> by that field's value (read without permission
// checks), so two users meet a rule that names only fields of theirs
// identically when those fields' values are equal: their class can be one,
// keyed by the values instead of the user (issue 21: "my team's items").
type userDep struct {
	// identity: a rule names the user itself ($CURRENT_USER,
	// $CURRENT_USER.id), a path through a relation of theirs, or mentions
	// the user where the broker cannot tell how: one class per user.
	identity bool
	// fields are the user's own fields the rules read, sorted.
	fields []string
}

func (d userDep) any() bool { return d.identity || len(d.fields) > 0 }

// merge adds o's dependence to d.
func (d *userDep) merge(o userDep) {
	d.identity = d.identity || o.identity
	for _, f := range o.fields {
		if !slices.Contains(d.fields, f) {
			d.fields = append(d.fields, f)
		}
	}
	slices.Sort(d.fields)
}

// userDepOf is the dependence of one rule (a permission's filter, JSON) on
// the user. Only "$CURRENT_USER.<field>" with a plain field name counts as a
// field; every other mention is identity (fail closed).
func userDepOf(raw []byte) userDep {
	if !mentionsUser(raw) {
		return userDep{}
	}
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return userDep{identity: true}
	}
	var d userDep
	found := false
	var walk func(x any)
	walk = func(x any) {
		switch t := x.(type) {
		case map[string]any:
			for k, e := range t {
				if strings.Contains(k, "$CURRENT_USER") {
					d.identity = true
				}
				walk(e)
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		case string:
			if !strings.Contains(t, "$CURRENT_USER") {
				return
			}
			found = true
			field, ok := strings.CutPrefix(t, "$CURRENT_USER.")
			if !ok || !userPath(field) {
				d.identity = true
				return
			}
			d.merge(userDep{fields: []string{field}})
		}
	}
	walk(v)
	if !found {
		d.identity = true // mentioned where no value is: cannot tell
	}
	return d
}

// maxUserPath bounds the depth of a $CURRENT_USER path the broker reads
// (a.b.c): deeper is per user.
const maxUserPath = 4

// userPath reports whether p, the part after "$CURRENT_USER.", is a field
// of the user ("team") or a path through many-to-one relations of theirs
// ("org.tier"), each step a plain field name, that names something else
// than the user itself. Whether the service user can read the path, and
// whether each step is a many-to-one, the model decides (userPaths).
func userPath(p string) bool {
	segs := strings.Split(p, ".")
	if len(segs) > maxUserPath || segs[0] == "id" || concealedUserFields[segs[0]] {
		return false
	}
	return !slices.ContainsFunc(segs, func(s string) bool { return !plainField(s) })
}

// concealedUserFields are the fields of directus_users Directus never
// shows (it answers "**********"): the service user cannot read their
// values, so a rule on one is per user.
var concealedUserFields = map[string]bool{"password": true, "token": true, "tfa_secret": true, "auth_data": true}

// concealed is the value Directus answers for a concealed or hashed field
// (custom fields of users can be): never a value to share by.
const concealed = `"**********"`

// plainField reports whether s is one field's name (no path, no function).
func plainField(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// UserFields lists the fields of directus_users that the read rules name
// as $CURRENT_USER.<field>, and the paths through the user's relations
// ($CURRENT_USER.org.tier is "org.tier"): what the service user must read
// of every user, and of every item such a path passes, so that users with
// equal values share reads (flow install grants them).
func UserFields(rules []json.RawMessage) []string {
	var d userDep
	for _, r := range rules {
		d.merge(userDepOf(r))
	}
	return d.fields
}
