package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/config"
	"github.com/directus-ws-broker/directus-ws-broker/directus"
	"github.com/directus-ws-broker/directus-ws-broker/flow"
)

const flowUsage = `usage:
  directus-ws-broker flow install --directus-url URL --token ADMIN_TOKEN --broker-url URL
        [--secret S] [--secret-header X-Webhook-Secret] [--collections a,b] [--name directus-ws-broker]
        [--accountability all] [--create-service-token]
        [--check-collection C [--check-timeout 10s] [--metrics-url URL]]
  directus-ws-broker flow remove --directus-url URL --token ADMIN_TOKEN [--name directus-ws-broker]

install creates (or updates in place) an active Directus Flow that posts every item create,
update and delete to the broker's webhook — of every collection, those created later too, or
of --collections — and every change of users, roles, policies, access and permissions (so the
broker regroups subscribers who share reads). The Flow logs no activity or revisions unless
--accountability says so. --create-service-token also makes a user that may only read the
permission model, and prints its token for the broker's DIRECTUS_SERVICE_TOKEN.
--check-collection creates an item in C, waits until the broker's /metrics counts an event,
and deletes the item; exit status 3 when nothing arrives.

Environment: DIRECTUS_URL, DIRECTUS_ADMIN_TOKEN, BROKER_URL, WEBHOOK_SECRET, WEBHOOK_SECRET_HEADER
(prefer these for the token and the secret: command lines are visible to every user of the machine).
`

// exitError makes the process exit with a specific status.
type exitError struct {
	error
	code int
}

// ExitCode is the process's exit status for this error.
func (e exitError) ExitCode() int { return e.code }

// exitCheckFailed is the status of an install whose --check-collection saw
// no event reach the broker: the Flow exists, but does not deliver.
const exitCheckFailed = 3

// flowCommand runs `flow install` and `flow remove`.
func flowCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("flow: missing subcommand: install or remove (see flow help)")}
	}
	sub, args := args[0], args[1:]
	switch sub {
	case "install":
		return flowInstall(ctx, args, getenv, stdout)
	case "remove":
		return flowRemove(ctx, args, getenv, stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, flowUsage)
		return nil
	}
	return usageError{fmt.Errorf("flow: unknown subcommand %q: install or remove (see flow help)", sub)}
}

// directusFlags are the flags both subcommands share.
type directusFlags struct {
	url, token, name string
	timeout          time.Duration
}

func (d *directusFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&d.url, "directus-url", getenv("DIRECTUS_URL"), "Directus base URL (env DIRECTUS_URL)")
	fs.StringVar(&d.token, "token", getenv("DIRECTUS_ADMIN_TOKEN"), "static token of a Directus admin (env DIRECTUS_ADMIN_TOKEN)")
	fs.StringVar(&d.name, "name", flow.DefaultName, "name of the Flow; install and remove find it by this name")
	fs.DurationVar(&d.timeout, "timeout", 30*time.Second, "bound on each request to Directus")
}

// client validates the shared flags and makes the Directus client.
func (d *directusFlags) client(cmd string) (*directus.Client, error) {
	if d.url == "" {
		return nil, usageError{fmt.Errorf("%s: --directus-url (or DIRECTUS_URL) is required", cmd)}
	}
	if d.token == "" {
		return nil, usageError{fmt.Errorf("%s: --token (or DIRECTUS_ADMIN_TOKEN) is required", cmd)}
	}
	if d.name == "" {
		return nil, usageError{fmt.Errorf("%s: --name must not be empty", cmd)}
	}
	c, err := directus.NewClient(d.url, d.timeout)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", cmd, err)}
	}
	return c, nil
}

// parseFlags parses args into fs, answering -h with the usage on stdout
// (done is then true) and refusing positional arguments.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (done bool, err error) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, flowUsage)
			return true, nil
		}
		return false, usageError{fmt.Errorf("%s: %w", fs.Name(), err)}
	}
	if fs.NArg() > 0 {
		return false, usageError{fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))}
	}
	return false, nil
}

func flowInstall(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	const cmd = "flow install"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var d directusFlags
	d.register(fs, getenv)
	brokerURL := fs.String("broker-url", getenv("BROKER_URL"), "the broker's webhook URL; /webhook is appended to a URL without a path (env BROKER_URL)")
	secret := fs.String("secret", getenv("WEBHOOK_SECRET"), "shared secret the Flow sends to the broker (env WEBHOOK_SECRET)")
	secretHeader := fs.String("secret-header", envOr(getenv, "WEBHOOK_SECRET_HEADER", config.Default().WebhookSecretHeader), "header carrying the secret: the broker's webhook_secret_header (env WEBHOOK_SECRET_HEADER)")
	collections := fs.String("collections", "", "comma-separated collections; default: every collection, those created later included")
	accountability := fs.String("accountability", "", "the Flow's activity logging: empty (none: no activity or revision row per event), all or activity (to debug the Flow in Directus)")
	serviceToken := fs.Bool("create-service-token", false, "also create (or update) a least-privilege user whose static token lets the broker read the permission model, and print its token (for DIRECTUS_SERVICE_TOKEN; each run sets a new one)")
	checkCollection := fs.String("check-collection", "", "after install, create and delete an item in this collection and wait for the broker to count the event")
	checkTimeout := fs.Duration("check-timeout", 10*time.Second, "how long --check-collection waits for the event")
	metricsURL := fs.String("metrics-url", "", "the broker's /metrics, read by --check-collection (default: next to the webhook)")
	if done, err := parseFlags(fs, args, stdout); done || err != nil {
		return err
	}
	client, err := d.client(cmd)
	if err != nil {
		return err
	}
	if *brokerURL == "" {
		return usageError{fmt.Errorf("%s: --broker-url (or BROKER_URL) is required", cmd)}
	}
	hook, err := webhookURL(*brokerURL)
	if err != nil {
		return usageError{fmt.Errorf("%s: %w", cmd, err)}
	}
	spec := flow.Spec{
		Name:           d.name,
		WebhookURL:     hook.String(),
		Secret:         *secret,
		SecretHeader:   *secretHeader,
		Accountability: *accountability,
	}
	if *collections != "" {
		spec.Collections = strings.Split(*collections, ",")
	}
	if err := spec.Validate(); err != nil {
		return usageError{fmt.Errorf("%s: %w", cmd, err)}
	}
	var metrics string
	if *checkCollection != "" {
		if *checkTimeout <= 0 {
			return usageError{fmt.Errorf("%s: --check-timeout must be positive", cmd)}
		}
		metrics = *metricsURL
		if metrics == "" {
			m := *hook
			m.Path = path.Join(path.Dir(hook.Path), "metrics")
			m.RawPath, m.RawQuery, m.Fragment = "", "", ""
			metrics = m.String()
		} else if u, err := url.Parse(metrics); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usageError{fmt.Errorf("%s: --metrics-url %q: must be an absolute http(s) URL", cmd, metrics)}
		}
	}

	res, err := flow.Install(ctx, client, d.token, spec)
	for _, id := range res.RemovedFlows {
		fmt.Fprintf(stdout, "deleted duplicate flow %s\n", id)
	}
	if err != nil {
		return err
	}
	verb := "updated"
	if res.Created {
		verb = "created"
	}
	on := "every collection (those created later too)"
	if len(res.Collections) > 0 {
		on = strings.Join(res.Collections, ", ")
	}
	logging := "no activity logging"
	if spec.Accountability != "" {
		logging = "accountability " + spec.Accountability
	}
	fmt.Fprintf(stdout, "%s flow %s %q (active, %s): item create, update, delete on %s; access changes of %s\n",
		verb, res.FlowID, d.name, logging, on, strings.Join(flow.AccessCollections, ", "))
	auth := "without a secret (the broker then accepts it only from its own host)"
	if spec.Secret != "" {
		auth = "with the secret in " + spec.SecretHeader
	}
	fmt.Fprintf(stdout, "operation %s posts to %s %s\n", res.OperationID, hook.Redacted(), auth)
	for _, id := range res.RemovedOperations {
		fmt.Fprintf(stdout, "deleted stray operation %s\n", id)
	}
	if *serviceToken {
		token, err := flow.EnsureServiceUser(ctx, client, d.token)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "service user %s: set DIRECTUS_SERVICE_TOKEN=%s in the broker's environment (shown once; run again to rotate)\n", flow.ServiceUserEmail, token)
	} else if synced, err := flow.SyncExistingServiceUser(ctx, client, d.token); err != nil {
		return err
	} else if synced {
		fmt.Fprintf(stdout, "service user %s: its policies brought in step with the schema and the rules (token unchanged)\n", flow.ServiceUserEmail)
	}
	if *checkCollection == "" {
		return nil
	}
	if len(res.Collections) > 0 && !contains(res.Collections, *checkCollection) {
		return usageError{fmt.Errorf("%s: --check-collection %s is not among the flow's collections", cmd, *checkCollection)}
	}
	err = flow.CheckDelivery(ctx, client, d.token, *checkCollection, metrics, *checkTimeout, stdout)
	if errors.Is(err, flow.ErrNoDelivery) {
		return exitError{err, exitCheckFailed}
	}
	return err
}

// webhookURL parses the broker URL, appending /webhook when it has no path.
func webhookURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--broker-url %q: must be an absolute http(s) URL", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path, u.RawPath = "/webhook", ""
	}
	return u, nil
}

// envOr is getenv(key), or def when it is empty.
func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func flowRemove(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	const cmd = "flow remove"
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	var d directusFlags
	d.register(fs, getenv)
	if done, err := parseFlags(fs, args, stdout); done || err != nil {
		return err
	}
	client, err := d.client(cmd)
	if err != nil {
		return err
	}
	removed, err := flow.Remove(ctx, client, d.token, d.name)
	for _, f := range removed {
		for _, op := range f.Operations {
			fmt.Fprintf(stdout, "deleted operation %s\n", op)
		}
		fmt.Fprintf(stdout, "deleted flow %s %q\n", f.ID, d.name)
	}
	if err != nil {
		return err
	}
	if len(removed) == 0 {
		fmt.Fprintf(stdout, "no flow named %q\n", d.name)
	}
	return nil
}
