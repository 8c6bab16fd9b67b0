package directus

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// coverage is which collections the active event Flows fire for: a
// collection none covers never produces events, and its subscribers would
// wait forever.
type coverage struct {
	all         bool            // a Flow fires for every collection (*.items.*)
	collections map[string]bool // collections some Flow lists
	at          time.Time       // when the Flows were read
}

// coverageRecheck is how old the Flows read may be before a collection
// they do not cover is checked again: installing a Flow fires no event the
// broker sees, so a subscriber of a collection just covered would be told
// NOT_COVERED until the next reread of the model (access_refresh).
const coverageRecheck = 2 * time.Second

func (c *coverage) covers(collection string) bool {
	return c.all || c.collections[collection]
}

// loadCoverage reads the active event Flows (the service user may read
// directus_flows; flow install grants it).
func loadCoverage(ctx context.Context, c *Client, token string) (*coverage, error) {
	data, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"flows"}, Token: token, Kind: "model", Query: url.Values{
		"filter[status][_eq]": {"active"}, "filter[trigger][_eq]": {"event"}, "fields": {"options"}, "limit": {"-1"},
	}})
	if err != nil {
		return nil, fmt.Errorf("read flows: %w", err)
	}
	var flows []struct {
		Options struct {
			Scope       []string `json:"scope"`
			Collections []string `json:"collections"`
		} `json:"options"`
	}
	if err := json.Unmarshal(data, &flows); err != nil {
		return nil, fmt.Errorf("read flows: %w", err)
	}
	cov := &coverage{collections: map[string]bool{}, at: time.Now()}
	for _, f := range flows {
		items := false
		for _, s := range f.Options.Scope {
			switch {
			case strings.HasPrefix(s, "*.items."):
				cov.all = true
			case strings.HasPrefix(s, "items."):
				items = true
			case strings.Contains(s, ".items."):
				cov.collections[s[:strings.Index(s, ".items.")]] = true
			}
		}
		if items {
			for _, coll := range f.Options.Collections {
				cov.collections[coll] = true
			}
		}
	}
	return cov, nil
}

// Covered reports whether an active Flow sends collection's events; known
// is false when the Flows cannot be read (no service token, or one that may
// not read them).
// Coverage tells whether a Directus Flow sends a collection's events.
type Coverage struct{ *Permissions }

func (c Coverage) Covered(collection string) (covered, known bool) {
	cov := c.coverage.Load()
	if cov == nil {
		return false, false
	}
	if !cov.covers(collection) && time.Since(cov.at) > coverageRecheck {
		if fresh := c.recheckCoverage(); fresh != nil {
			cov = fresh
		}
	}
	return cov.covers(collection), true
}

// recheckCoverage reads the Flows again, once at a time (nil: it could
// not; the last read stands).
func (c Coverage) recheckCoverage() *coverage {
	c.covMu.Lock()
	defer c.covMu.Unlock()
	if cov := c.coverage.Load(); cov != nil && time.Since(cov.at) <= coverageRecheck {
		return cov // another subscriber just read them
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cov, err := loadCoverage(ctx, c.client, c.service)
	if err != nil {
		return nil
	}
	c.coverage.Store(cov)
	return cov
}
