package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/config"
)

const healthcheckUsage = `usage: directus-ws-broker healthcheck [--url URL] [--timeout 3s] [--config FILE]

GETs the broker's /healthz and exits 0 when it answers 200, 1 otherwise: a
HEALTHCHECK for images without curl or wget. Without --url the address comes
from listen_addr (LISTEN_ADDR, the config file), with 0.0.0.0 and :: asked on
loopback.
`

// healthcheckCommand asks a running broker's /healthz. Every failure,
// usage errors included, exits 1: container engines read 0 as healthy, 1
// as unhealthy, and reserve 2.
func healthcheckCommand(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("url", "", "the /healthz URL (default: from listen_addr)")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on the request")
	path := fs.String("config", getenv("CONFIG_FILE"), "path of the YAML configuration file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, healthcheckUsage)
			return nil
		}
		return fmt.Errorf("healthcheck: %w\n%s", err, healthcheckUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("healthcheck: unexpected argument %q\n%s", fs.Arg(0), healthcheckUsage)
	}
	target := *url
	if target == "" {
		cfg, _, err := config.Load(*path, getenv)
		if err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
		if target, err = healthzURL(cfg.ListenAddr); err != nil {
			return fmt.Errorf("healthcheck: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	// Never through HTTP_PROXY: the broker is on this host.
	client := &http.Client{Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: GET %s: HTTP %d", target, resp.StatusCode)
	}
	fmt.Fprintf(stdout, "healthy: GET %s: HTTP 200\n", target)
	return nil
}

// healthzURL is the /healthz URL of a broker listening on addr: a wildcard
// host is reached on loopback.
func healthzURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("listen_addr %q: %w", addr, err)
	}
	if port == "0" {
		return "", fmt.Errorf("listen_addr %q has port 0 (a free port picked at start): pass --url", addr)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz", nil
}
