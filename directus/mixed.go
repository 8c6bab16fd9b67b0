package directus

import (
	"context"
	"encoding/json"
	"strings"
)

// Mixed rules (issue 21.3). A user whose read rules on a collection are an
// owner part F = $CURRENT_USER and user-independent parts S (one rule
// {"_or": [S…, owner]}, or policies with S beside a policy with the owner
// rule) sees an item when S holds for it or its F is the user. Of an item
// whose F is known to be someone else (or null), every such user with the
// same policies reads exactly the S view: one read, made with the token of
// any of them who does not own it, serves them all. Only the items whose F
// is the reader, or not known, are read with the reader's own token. That
// holds only when nothing else in the read depends on the user: a query
// whose relations reach a collection with a user rule is not split.

// mixedRule marks, in accessModel.ownerRule, a rule that is independent of
// the user; "F|*" is an _or of an owner part on F and such parts.
const independentRule = "*"

// ownerPartOf is F when raw is {"_or": [...]} with exactly one part an
// owner rule on F and every other part independent of the user.
func ownerPartOf(raw []byte) (string, bool) {
	var v map[string]json.RawMessage
	if json.Unmarshal(raw, &v) != nil || len(v) != 1 || v["_or"] == nil {
		return "", false
	}
	var parts []json.RawMessage
	if json.Unmarshal(v["_or"], &parts) != nil || len(parts) < 2 {
		return "", false
	}
	owner := ""
	for _, p := range parts {
		if f, ok := ownerFieldOf(p); ok && owner == "" {
			owner = f
			continue
		}
		if userDepOf(p).any() || strings.Contains(string(p), "$CURRENT_") && !independentVariables(p) {
			return "", false
		}
	}
	return owner, owner != ""
}

// independentVariables reports whether the only dynamic variables p uses
// are the role's and the policies' (the class key holds both) or $NOW.
func independentVariables(p []byte) bool {
	s := string(p)
	for _, v := range []string{"$CURRENT_ROLES", "$CURRENT_ROLE", "$CURRENT_POLICIES"} {
		s = strings.ReplaceAll(s, v, "")
	}
	return !strings.Contains(s, "$CURRENT_")
}

// ruleKind is what addOwnerRule files for a rule.
func ruleKind(raw []byte) string {
	if f, u, ok := ownerRuleOf(raw); ok {
		if u != "" {
			return f + "=" + u
		}
		return f
	}
	if f, ok := ownerPartOf(raw); ok {
		return f + "|" + independentRule
	}
	if !strings.Contains(string(raw), "$CURRENT_") || independentVariables(raw) {
		return independentRule
	}
	return ""
}

// mixedOf is F when a's read rules on collection are owner parts on F and
// user-independent parts, at least one of each.
func (m *accessModel) mixedOf(a access, collection string) (string, bool) {
	if a.admin {
		return "", false
	}
	owner, independent := "", false
	for _, p := range a.policies {
		r, has := m.ownerRule[p][collection]
		if !has {
			continue
		}
		f, rest, _ := strings.Cut(r, "|")
		switch {
		case r == independentRule:
			independent = true
			continue
		case r == "" || strings.Contains(f, "=") || f == independentRule:
			return "", false
		case rest == independentRule:
			independent = true
		}
		if owner != "" && owner != f {
			return "", false
		}
		owner = f
	}
	return owner, owner != "" && independent
}

// onlyRootDepends reports whether, of the collections a read of collection
// with q touches, only collection itself has rules that depend on the user.
func (m *accessModel) onlyRootDepends(a access, collection string, q map[string]any) bool {
	touched, all := m.schema.reach(collection, q)
	if all {
		return false
	}
	for c := range touched {
		if c == collection {
			continue
		}
		if a.app && appUserCollections[c] {
			return false
		}
		for _, p := range a.policies {
			if m.userRule[p][c].any() {
				return false
			}
		}
	}
	return true
}

// Split implements broker.KeySplitter.
func (c Classifier) Split(ctx context.Context, class, collection string, keys []string, batch string) (own, shared []string, shareClass string, ok bool) {
	v, found := c.owners.Load(class + "\x00" + collection)
	if !found {
		return nil, nil, "", false
	}
	spec := v.(ownerSpec)
	m := c.model.Load()
	if !spec.mixed || spec.collection != collection || m == nil || m.schema.pk[collection] == "" {
		return nil, nil, "", false
	}
	owners, err := c.lookups.owners(ctx, c.client, c.service, collection, m.schema.pk[collection], spec.field, keys, batch)
	if err != nil {
		return nil, nil, "", false
	}
	for _, k := range keys {
		o, known := owners[k]
		// Someone else's (same JSON type, another value) or nobody's: the S
		// view, shared. The reader's, or not known: its own read.
		if known && (o == "null" || !mayMatch(o, spec.value)) {
			shared = append(shared, k)
		} else {
			own = append(own, k)
		}
	}
	return own, shared, spec.share, true
}
