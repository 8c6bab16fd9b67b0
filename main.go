// Command directus-ws-broker gives Directus realtime: Directus posts item
// events to its webhook, and WebSocket clients subscribed to a collection
// receive them, filtered by what each client's own token may read.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "directus-ws-broker:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode maps an error to the process's exit status: 2 for usage and
// configuration errors, 1 for everything else.
func exitCode(err error) int {
	var coded interface{ ExitCode() int }
	if errors.As(err, &coded) {
		return coded.ExitCode()
	}
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

type usageError struct{ error }

// run dispatches the subcommands; tests call it directly.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stdout, stderr)
	case "checkconfig":
		return checkConfig(args, getenv, stdout)
	case "flow":
		return flowCommand(ctx, args, getenv, stdout, stderr)
	case "healthcheck":
		return healthcheckCommand(ctx, args, getenv, stdout)
	case "version", "--version":
		return versionCommand(args, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q\n%s", cmd, usage)}
}

const usage = `usage:
  directus-ws-broker [serve] [--config config.yaml]   run the broker
  directus-ws-broker checkconfig [--config FILE]      validate the configuration and exit
  directus-ws-broker flow install --directus-url URL --token ADMIN_TOKEN --broker-url URL [--secret S] [--collections a,b]
                                  [--check-collection C]   (exit 3 when no event reaches the broker)
  directus-ws-broker flow remove  --directus-url URL --token ADMIN_TOKEN
  directus-ws-broker healthcheck [--url URL]          GET /healthz: exit 0 when healthy, 1 otherwise
  directus-ws-broker version                          print the version, commit and Go version
Settings come from config.yaml and environment variables (environment wins); see docs/operating.md.
`
