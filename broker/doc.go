// Package broker owns the domain of directus-ws-broker: the normalized item
// event, the bus that carries events between broker instances, the
// collection → subscription index and the fan-out that delivers each event to
// the subscriptions allowed to see it.
//
// Every event takes one path: Publish → Bus → dispatch → groups → sinks. A
// group is every subscription that shares one (token, collection, query):
// the broker reads a changed item once per group with that token, never once
// per subscriber, and encodes each distinct frame once.
//
// The package imports nothing else of the module; Directus is reached through
// the Reader interface and clients through the Sink interface.
package broker
