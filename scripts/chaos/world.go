package main

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// world is what the scenarios find in Directus: collections with items,
// and users of one role that may read them, each with its own token.
type world struct {
	users []string // static tokens
	keys  map[string][]int
	role  string // the users' role
}

// newWorld creates the collection coll with items items, a role that may
// read it, and users users of that role; name keeps the users and the role
// of one scenario apart from the others'.
func newWorld(ctx context.Context, dx *directustest.Instance, name, coll string, items, users int) (*world, error) {
	w := &world{keys: map[string][]int{}}
	if err := dx.CreateCollection(ctx, coll, directustest.Field{Name: "title"}, directustest.Field{Name: "body", Type: "text"}); err != nil {
		return nil, fmt.Errorf("collection %s: %w", coll, err)
	}
	batch := make([]map[string]any, items)
	for i := range batch {
		batch[i] = map[string]any{"title": "item " + strconv.Itoa(i)}
	}
	var out struct {
		Data []struct {
			ID int `json:"id"`
		} `json:"data"`
	}
	if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/items/"+coll+"?fields=id", batch, &out); err != nil {
		return nil, fmt.Errorf("items of %s: %w", coll, err)
	}
	for _, d := range out.Data {
		w.keys[coll] = append(w.keys[coll], d.ID)
	}
	role, err := dx.CreateRoleWithReadPolicy(ctx, name+" readers", coll, nil, nil)
	if err != nil {
		return nil, err
	}
	w.role = role
	var people []map[string]any
	for i := range users {
		token := fmt.Sprintf("chaos-%s-%d", name, i)
		people = append(people, map[string]any{"email": fmt.Sprintf("%s%d@chaos.example.com", name, i), "token": token, "role": role, "status": "active"})
		w.users = append(w.users, token)
	}
	if len(people) > 0 {
		if _, err := dx.Do(ctx, dx.AdminToken, http.MethodPost, "/users", people, nil); err != nil {
			return nil, fmt.Errorf("users: %w", err)
		}
	}
	return w, nil
}
