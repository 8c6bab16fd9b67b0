// Package broker owns the domain of directus-ws-broker: the normalized item
// event, the bus that carries events between broker instances, the
// collection → subscription index and the fan-out that delivers each event to
// the subscriptions allowed to see it.
//
// Every event takes one path: Publish → Bus → dispatch → groups → sinks. A
// group is every subscription of one collection that shares one access
// class (Classifier) and one query: the broker reads a changed item once per
// group, with any member's token, never once per subscriber, and encodes
// each distinct frame once.
//
// The package imports nothing else of the module; Directus is reached through
// the Reader interface and clients through the Sink interface.
//
// # Concurrency model
//
// This is the one place the model is written down; the code follows it, and
// a comment elsewhere that disagrees is the bug.
//
// Goroutines and what each owns (writes; others only read, under the lock
// named):
//
//   - A shard worker (one per shard; a collection always hashes to the same
//     shard) runs its queue's tasks in order: event batches and control
//     tasks (attach, rebind, barriers, Drain, Stop). It owns sh.last, is the
//     only one that hands events to its groups' pipelines or starts them,
//     and makes every change of membership of its collections' groups
//     (attach, rebind) — each while the pipelines of the groups it touches
//     are idle, so a member never joins or leaves a group in the middle of
//     a delivery.
//   - A group's pipeline (at most one run at a time: pipeline.running) owns
//     the group's delivery state: its reads, g.known (the delete rule),
//     g.missing, and the order of its frames. Batches handed to it while it
//     runs are merged and delivered after (pipeline.pending, bounded).
//   - The access worker (one) rereads the permission model (I/O, while the
//     shards go on) and regroups the collections of the shards the change's
//     barrier holds — those of the subscriptions it may concern when it
//     arrived (every shard without a DoubtScope) — once each of them is
//     parked there with its pipelines idle, that is, while their other
//     owners have ceded. The other shards run on. A subscription the change
//     concerns that attaches (or rebinds) on one of them meanwhile records
//     itself in the change's doubt (classified); once the change is applied
//     a control task on its own shard classifies it again (settle, reclass),
//     and the change stays pending (its groups read apart) until then. (A
//     change no attached subscription is concerned by has no barrier at
//     all.)
//   - Client goroutines (Subscribe's caller, Unsubscribe) read a resume's
//     history and a snapshot themselves, so a reconnect storm does not delay
//     other events. The one write they make outside the owners is a detach:
//     Unsubscribe closes the subscription under its sendMu (no frame is
//     queued for it after), then removes it from the index. A pipeline that
//     still holds the old member slice skips it (closed), and a
//     subscription is never attached again, so the removal commutes with
//     every other step.
//   - A subscription's credentials are written only by Rebind's worker task,
//     after the pipelines of the old and the new group are idle: a read is
//     never made for the old class with the new token.
//
// What may wait for what (and nothing else):
//
//   - The webhook (Publish → TryDispatch) never waits: a full queue answers
//     503. A bus reading from the network (Dispatch) waits for queue room,
//     until Close.
//   - A shard worker waits for the pipelines its task touches (waitIdle,
//     quiesced), for a group past its backlog bound (until it catches up or
//     Stop), and at a barrier for the access worker's release (or Close).
//   - A pipeline waits for a read slot (fairSem) and for Directus, both
//     bounded by ReadTimeout and cancelled by Stop and Close (readCtx);
//     never for a worker, another pipeline or a client (Sink.Send does not
//     block).
//   - The access worker waits for its reread (AccessTimeout, cancelled by
//     Stop and Close) and for the shards it holds to park (released by
//     Close); never for an attach, a rebind or its own late classifications
//     (queued, not awaited), so two changes and two attaches crossing each
//     other's shards cannot deadlock it.
//   - Subscribe waits for its attach task (once queued it waits even if its
//     context ends: it must know whether it ran); Unsubscribe waits at most
//     for one frame being queued.
//   - Stop cancels every read, waits (within its context) for each shard to
//     pass what it had queued, and reports the rest; Close releases every
//     wait above through the done channel and returns when the workers have.
//
// Lock order (outer before inner; a lock not listed is a leaf, taken alone:
// queue.mu, skippedMu, keyMemory.mu, the fairSem's, the access worker's):
//
//	index.mu → index.orderMu
//	index.mu → group.mu
//	index.mu → the Classifier's own locks (Class and Concerns run under it)
//	doubts.mu → index.mu (a barrier scans the index for the subscriptions
//	  its change concerns under the doubts' lock; an attach takes them one
//	  after the other, never nested)
//	doubts.mu → the Forgetter's own locks (a quiet change is forgotten
//	  under it)
//	pipes.mu → pipeline.mu
//	Subscription.sendMu → holdQueue.mu → initKeys.mu, the Sink's own lock
//
// pipeline.mu is held while the worker waits on its cond (the backlog
// bound) and nothing else is taken under it; delivery takes group.mu only
// to copy the members and never holds it while sending.
package broker
