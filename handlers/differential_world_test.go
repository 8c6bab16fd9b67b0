package handlers_test

import (
	"net/http"
	"testing"
)

// diffManyRelations adds to the differential test's schema a many-to-many
// (items.tags through <prefix>_items_tags into <prefix>_tags) and a
// many-to-any (items.parts through <prefix>_items_parts into refs or tags),
// and the items' field "policy" (for $CURRENT_POLICIES rules). It returns
// the tags collection and the two junctions.
func diffManyRelations(t *testing.T, prefix, items, refs string) (tags, tagJunction, partJunction string) {
	tags, tagJunction, partJunction = prefix+"_tags", prefix+"_items_tags", prefix+"_items_parts"
	pk := map[string]any{"field": "id", "type": "integer", "schema": map[string]any{"is_primary_key": true, "has_auto_increment": true}}
	str := func(name string) map[string]any { return map[string]any{"field": name, "type": "string"} }
	num := func(name string) map[string]any {
		return map[string]any{"field": name, "type": "integer", "schema": map[string]any{}}
	}
	coll := func(name string, fields ...any) {
		admin(t, http.MethodPost, "/collections", map[string]any{"collection": name, "schema": map[string]any{}, "meta": map[string]any{}, "fields": append([]any{pk}, fields...)})
	}
	coll(tags, str("title"), str("owner"))
	coll(tagJunction, num("item_id"), num("tag_id"))
	admin(t, http.MethodPost, "/fields/"+items, map[string]any{"field": "tags", "type": "alias", "meta": map[string]any{"special": []string{"m2m"}}})
	admin(t, http.MethodPost, "/relations", map[string]any{"collection": tagJunction, "field": "item_id", "related_collection": items,
		"meta": map[string]any{"one_field": "tags", "junction_field": "tag_id"}, "schema": map[string]any{"on_delete": "CASCADE"}})
	admin(t, http.MethodPost, "/relations", map[string]any{"collection": tagJunction, "field": "tag_id", "related_collection": tags,
		"meta": map[string]any{"junction_field": "item_id"}, "schema": map[string]any{"on_delete": "CASCADE"}})

	coll(partJunction, num("item_id"), str("collection"), str("item"))
	admin(t, http.MethodPost, "/fields/"+items, map[string]any{"field": "parts", "type": "alias", "meta": map[string]any{"special": []string{"m2a"}}})
	admin(t, http.MethodPost, "/relations", map[string]any{"collection": partJunction, "field": "item", "related_collection": nil,
		"meta": map[string]any{"one_allowed_collections": []string{refs, tags}, "one_collection_field": "collection", "junction_field": "item_id"}})
	admin(t, http.MethodPost, "/relations", map[string]any{"collection": partJunction, "field": "item_id", "related_collection": items,
		"meta": map[string]any{"one_field": "parts", "junction_field": "item"}, "schema": map[string]any{"on_delete": "CASCADE"}})

	admin(t, http.MethodPost, "/fields/"+items, str("policy"))
	return tags, tagJunction, partJunction
}
