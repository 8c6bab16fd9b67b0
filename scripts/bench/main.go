// Command bench is the load generator and benchmark suite of the broker
// (issue 5). It starts the broker (bin/directus-ws-broker) as a separate
// process for each scenario, holds up to 19,000 WebSocket subscribers in
// this process, sends item events to the broker's webhook open-loop and
// prints one table and, with -json, one machine-readable JSON line.
//
//	go run ./scripts/bench                 every scenario (make bench)
//	go run ./scripts/bench -quick          small sizes, under a minute (CI)
//	go run ./scripts/bench -scenarios 1,6 -runs 5 -json
//
// Where a real Directus would only measure Directus (thousands of subscribe
// probes, 1,000 reads a second) the broker talks to a stub (stub.go); the
// figures that the issue defines with a Directus read in them (scenario 1's
// "Directus read" rows, scenario 6) use the real Directus of
// internal/directustest.
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
