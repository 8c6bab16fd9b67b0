package directus

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// coverage is which collections the active event Flows fire for: a
// collection none covers never produces events, and its subscribers would
// wait forever.
type coverage struct {
	all         bool            // a Flow fires for every collection (*.items.*)
	collections map[string]bool // collections some Flow lists
}

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
	cov := &coverage{collections: map[string]bool{}}
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
	return cov.covers(collection), true
}
