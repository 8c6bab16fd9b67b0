// Command bench is the load generator and benchmark suite of the broker
// (issues 5 and 6). It starts the broker (bin/directus-ws-broker) as a separate
// process for each scenario, holds up to 19,000 WebSocket subscribers in
// this process (spread over 127.0.0.1-50 as source addresses), sends item
// events to the broker's webhook and prints one table and, with -json, one
// machine-readable JSON line.
//
//	go run ./scripts/bench                 every scenario, about 4-5 minutes (make bench)
//	go run ./scripts/bench -quick          small sizes, about 30 s (CI smoke run)
//	go run ./scripts/bench -scenarios 1,6 -runs 5 -json
//	go run ./scripts/bench -quick -no-directus   without a real Directus
//
// The scenarios (sizes without -quick):
//
//  1. one event at a time to 1,000 and 10,000 subscribers of one collection,
//     webhook POST → last receipt; median and p99 over 30 events per run,
//     with the item read from the real Directus and with the stub's instant
//     read; plus one Directus read timed alone.
//  2. 10,000 subscribers over 100 collections, 1,000 events/s open loop for
//     10 s per run: broker CPU per delivered message, latency p50/p99 from
//     each event's scheduled send time, drops.
//  3. RSS per idle subscribed connection at 1,000 and 19,000 (one
//     measurement; -runs does not repeat it).
//  4. webhook events accepted per second for 3 s per run, keep-alive and
//     Connection: close, with 1,000 subscribers over 100 collections
//     receiving every event (checked).
//  5. 1,000 subscribers, 1% stop reading: the others' p99 before and during,
//     evictions, disconnections, missing deliveries, broker RSS growth; a
//     fresh broker per run.
//  6. a REST write in the real Directus (12.3.1, WEBSOCKETS_ENABLED) timed to
//     the last of 1,000 and 5,000 subscribers of the broker (fed by a Flow)
//     and of Directus's own /websocket, both connected; 5 and 3 writes (the
//     writes are the samples; -runs does not repeat them).
//  7. 10,000 subscribers of one collection split over two broker instances
//     sharing a private Redis (BUS=redis, issue 6), one event at a time
//     posted to instance A: POST → last receipt over both and on each, and
//     POST → the event on the Redis channel; then the same subscribers on
//     one instance (BUS=memory) and the latency the second instance and
//     Redis add. 30 events per run.
//  8. subscribers with their own tokens (issue 10), on a real Directus
//     11.17.4: 1,000 users of one role (without and with a service token,
//     and on Directus's own realtime for the same REST writes), 10,000
//     users in 10 roles, 1,000 users with an owner rule, and a reconnect
//     storm of 10,000 subscribers of 1,000 users with every Directus call
//     counted (s8_classes.go).
//  9. a REST write in Directus 11.17.4 timed to 1 subscriber and to the
//     last of 100, broker (fed by the Flow, no activity logging) against
//     Directus's own realtime, 15 writes each, with the breakdown of the
//     broker's time from its debug log and Directus's (s9_write.go).
//  10. three broker instances on one private Redis with cluster reads
//     (issue 24), Directus 11.17.4, the flow-install service user: 1,000
//     users of one role spread over them against one instance in the same
//     run, 10,000 users in 10 roles, reads per event for the whole
//     cluster, and an open loop checking the capacity model's reads/s and
//     Redis calls/s (s10_cluster.go).
//
// Figures are medians over -runs runs (default 3). Targets missed are
// reported, not fatal: the exit status is 1 only when a scenario could not
// run (the tool is broken, or the broker died).
//
// Where a real Directus would only measure Directus (thousands of subscribe
// probes, 1,000 reads a second) the broker talks to a stub (stub.go) that
// this program runs as a separate process; the figures that the issue
// defines with a Directus read in them (scenario 1's "Directus read" rows,
// scenario 6) use the real Directus of internal/directustest, the stub then
// proxying item reads to it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "stub" {
		err = stubMain(ctx, os.Args[2:], os.Stdout)
	} else {
		err = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// errScenarios is returned when the table was printed but a scenario could
// not run: the tool itself is broken (targets missed are not errors).
var errScenarios = fmt.Errorf("some scenarios failed to run (see the table)")
