package directus

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/directus-ws-broker/directus-ws-broker/broker"
)

// Watcher is the broker's AccessWatcher: it learns of changes from the
// events of Directus's system collections (AccessChanged) and rereads
// everything every refresh interval (Refresh).
type Watcher struct{ *Permissions }

// Concerns implements broker.DoubtScope: a change of users concerns only
// their tokens; any other access change may concern every subscription.
func (c Watcher) Concerns(e broker.Event, cred broker.Credentials) bool {
	path := c.pathEvent(e)
	if e.Collection != "directus_users" && !path {
		return true
	}
	id, _ := cred.Principal.(Identity)
	if id.UserID == "" {
		return false // the public and shares: no user a change of users names
	}
	if path {
		// A related item a user path passes: the users read through it.
		return c.users.refers(id.UserID, e.Collection, e.Keys)
	}
	return slices.Contains(e.Keys, id.UserID)
}

// Forget implements broker.Forgetter: a change of users no subscription
// holds a token of forgets their roles (read again at their next
// subscribe) and what was proven under the old ones.
func (c Watcher) Forget(e broker.Event) {
	if c.pathEvent(e) {
		c.users.itemsMoved(e.Collection, e.Keys, false)
	} else {
		c.users.forget(e.Keys)
	}
	c.gen.Add(1)
}

// IsAccessEvent implements broker.AccessWatcher: e is a change of what
// decides access.
func (c Watcher) IsAccessEvent(e broker.Event) bool {
	return systemAccess[e.Collection] || c.pathEvent(e)
}

// Delivers implements broker.Deliverer: a change of an item a user path
// passes (an organization whose tier rules read) is an access change and
// still an item event of its collection.
func (c Watcher) Delivers(e broker.Event) bool { return !systemAccess[e.Collection] }

// pathEvent reports whether e changes or removes items a user path passes
// (userpath.go); a create cannot: no user's value was read through it.
func (c Watcher) pathEvent(e broker.Event) bool {
	if systemAccess[e.Collection] || e.Action == broker.ActionCreate {
		return false
	}
	m := c.model.Load()
	return m != nil && m.pathCollection(e.Collection)
}

// AccessChanged implements broker.AccessWatcher. A change of roles,
// policies, access rows, permissions or relations rereads the model. A
// change of users rereads their roles, and the tokens of theirs that are in
// use are checked again with Directus: those it refuses now (a token
// rotated, a user suspended or deleted) are returned.
func (c Watcher) AccessChanged(ctx context.Context, events []broker.Event, live []broker.Credentials) (refused []string, err error) {
	users := map[string]bool{}
	var moved []string // users whose path values changed (no token to check)
	reload := false
	for _, e := range events {
		switch {
		case e.Collection == "directus_users":
			for _, k := range e.Keys {
				users[k] = true
			}
		case systemAccess[e.Collection]:
			reload = true
		case c.pathEvent(e):
			moved = append(moved, c.users.itemsMoved(e.Collection, e.Keys, true)...)
		}
	}
	if len(moved) > 0 && c.service != "" {
		if err := c.users.load(ctx, moved, true); err != nil {
			c.users.forget(moved) // read apart until read again
		}
		c.gen.Add(1)
	}
	var errs []error
	if reload {
		if err := c.Load(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if len(users) > 0 {
		if c.service != "" {
			ids := make([]string, 0, len(users))
			for u := range users {
				ids = append(ids, u)
			}
			if err := c.users.load(ctx, ids, true); err != nil {
				errs = append(errs, err)
			}
		}
		refused = append(refused, c.revalidate(ctx, live, func(id Identity) bool { return users[id.UserID] })...)
		c.gen.Add(1)
	}
	return refused, errors.Join(errs...)
}

// Refresh rereads the model and the roles of every user in live: the
// safety net under the events.
func (c Watcher) Refresh(ctx context.Context, live []broker.Credentials) error {
	if c.service == "" {
		return nil
	}
	err := c.Load(ctx)
	if c.preloaded.Load() {
		return err
	}
	var ids []string
	seen := map[string]bool{}
	for _, cred := range live {
		if id, _ := cred.Principal.(Identity); id.UserID != "" && !seen[id.UserID] {
			seen[id.UserID] = true
			ids = append(ids, id.UserID)
		}
	}
	if len(ids) > 0 {
		err = errors.Join(err, c.users.load(ctx, ids, true))
	}
	return err
}

// Revalidate implements broker.Revalidator: after a secret that verified
// JWTs was refused by Directus (rotated), every JWT in use is checked with
// Directus again, and those it refuses are returned.
func (c Watcher) Revalidate(ctx context.Context, live []broker.Credentials) []string {
	if c.auth == nil || !c.auth.TakeDistrust() {
		return nil
	}
	refused := c.revalidate(ctx, live, func(id Identity) bool { return id.JWT })
	c.log.Warn().Int("refused", len(refused)).Msg("directus_secret refused by Directus: the JWTs in use were checked with Directus again")
	return refused
}

// tokenRefused reports whether Directus refused the token itself (not
// what it may read): 401, or its INVALID_TOKEN (403).
func tokenRefused(err error) bool {
	var de *Error
	return errors.As(err, &de) && (de.Status == http.StatusUnauthorized || de.Code == ErrInvalidToken.Code)
}

// revalidate checks again with Directus each live token of the users match
// selects, and returns those it refuses.
func (c Watcher) revalidate(ctx context.Context, live []broker.Credentials, match func(Identity) bool) []string {
	var refused []string
	seen := map[string]bool{}
	for _, cred := range live {
		id, _ := cred.Principal.(Identity)
		if cred.Token == "" || seen[cred.Token] || !match(id) {
			continue
		}
		seen[cred.Token] = true
		if _, err := c.auth.Fresh(ctx, cred.Token); err != nil {
			if tokenRefused(err) {
				refused = append(refused, cred.Token)
			} else {
				c.log.Warn().Err(err).Str("user", id.UserID).Msg("could not check a token again after a change of its user")
			}
		}
	}
	return refused
}
