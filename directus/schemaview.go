package directus

import "sort"

// SchemaField is one field of a collection as the service user sees the
// schema: its Directus type, whether it is the primary key, and where a
// relational field leads (Related; List for a one-to-many or many-to-many
// alias). A many-to-any has no single Related and is left relational-less
// (Any).
type SchemaField struct {
	Name    string
	Type    string
	Primary bool
	Related string
	List    bool
	Any     bool
}

// Schema is every collection's fields as the last model read saw them
// (nil before one). Consumers that build their own view of the schema
// (the GraphQL endpoint's types) use it; the access decisions do not.
func (c *Permissions) Schema() map[string][]SchemaField {
	m := c.model.Load()
	if m == nil || m.schema == nil {
		return nil
	}
	g := m.schema
	out := make(map[string][]SchemaField, len(g.fields))
	for coll, fields := range g.fields {
		list := make([]SchemaField, 0, len(fields))
		for name := range fields {
			f := SchemaField{Name: name, Type: g.types[coll][name], Primary: g.pk[coll] == name}
			if targets, ok := g.m2o[coll][name]; ok {
				if len(targets) == 1 && targets[0] != anyCollection {
					f.Related = targets[0]
				} else {
					f.Any = true
				}
			} else if rel, ok := g.o2m[coll][name]; ok {
				f.Related, f.List = rel, true
			}
			list = append(list, f)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		out[coll] = list
	}
	return out
}
