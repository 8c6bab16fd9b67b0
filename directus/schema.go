package directus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// ErrNoPrimaryKey means the token cannot see a primary key field of the
// collection (it has none, or the token may not read its fields).
var ErrNoPrimaryKey = errors.New("no primary key field visible")

// PrimaryKey asks Directus (GET /fields/<collection>) for the name of the
// collection's primary key field, as token sees it.
func PrimaryKey(ctx context.Context, c *Client, token, collection string) (string, error) {
	data, err := c.Do(ctx, Request{Method: http.MethodGet, Segments: []string{"fields", collection}, Token: token, Kind: "schema"})
	if err != nil {
		return "", fmt.Errorf("read fields of %s: %w", collection, err)
	}
	var fields []struct {
		Field  string `json:"field"`
		Schema *struct {
			IsPrimaryKey bool `json:"is_primary_key"`
		} `json:"schema"`
	}
	if err := json.Unmarshal(data, &fields); err != nil {
		return "", fmt.Errorf("read fields of %s: %w", collection, err)
	}
	for _, f := range fields {
		if f.Schema != nil && f.Schema.IsPrimaryKey {
			return f.Field, nil
		}
	}
	return "", fmt.Errorf("collection %s: %w", collection, ErrNoPrimaryKey)
}
