package broker

// Credentials are what a subscription reads Directus with.
type Credentials struct {
	// Token is the Directus token reads are made with ("" = the public role).
	Token string
	// Principal is what the Classifier knows about the token's owner (for
	// Directus: user, role, how the token carries it). The broker only hands
	// it back to the Classifier.
	Principal any
}

// Classifier decides which subscriptions may share one read: the broker
// groups the subscriptions of a collection by (class, query) and reads once
// per group, with the token of any member.
//
// Class must be pure and quick: it runs on the dispatch workers (at attach,
// rebind and after an access change) and may not do I/O.
type Classifier interface {
	// Class names the access class of cred for reads of collection with q.
	// Two credentials may get one class only when Directus is guaranteed to
	// answer every read the broker makes for such a subscription
	// identically for both.
	Class(cred Credentials, collection string, q Query) string
}

// TokenClasses is the Classifier that shares nothing between tokens: one
// class per token. Tests of the domain use it; the broker's assembly uses
// Directus's permission model (package directus).
type TokenClasses struct{}

// Class implements Classifier.
func (TokenClasses) Class(c Credentials, _ string, _ Query) string { return "token:" + c.Token }
