package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/directustest"
)

// options are the command line.
type options struct {
	scenarios  []int
	runs       int
	quick      bool
	json       bool
	brokerBin  string
	dxVersion  string
	noDirectus bool
	timeout    time.Duration
	plot       string
	flowRead   bool
	// graphqlOnly runs only scenario 8's GraphQL case.
	graphqlOnly bool
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenarios", "1,2,3,4,5,6,7,8,9,10", "comma-separated scenarios to run (see the package comment)")
	runs := fs.Int("runs", 0, "runs per scenario; the table shows medians (default 3, 1 with -quick)")
	var o options
	fs.BoolVar(&o.quick, "quick", false, "small sizes: a smoke run of every scenario in under a minute")
	fs.BoolVar(&o.quick, "smoke", false, "same as -quick")
	fs.BoolVar(&o.json, "json", false, "also print the results as one JSON line")
	fs.StringVar(&o.brokerBin, "broker", "", "broker binary (default bin/directus-ws-broker, built when missing)")
	fs.StringVar(&o.dxVersion, "directus-version", "12.3.1", "Directus version for the scenarios that need a real one (1, 6)")
	fs.BoolVar(&o.noDirectus, "no-directus", false, "do not start Directus: scenario 1 only with stub reads, scenario 6 skipped")
	fs.BoolVar(&o.graphqlOnly, "graphql-only", false, "scenario 8: only the GraphQL case (/realtime and /graphql alternately, twice each)")
	fs.BoolVar(&o.flowRead, "flow-read", false, "scenario 9: the Flow reads the item itself (an item-read operation before its webhook), to measure what posting items would cost")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up after this long (default 15m, 3m with -quick)")
	fs.StringVar(&o.plot, "plot", "bench-results/latency.png", "plot of scenario 6 (.png or .svg, drawn by gnuplot); empty: none; with -quick only when given")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.quick && !flagSet(fs, "plot") {
		o.plot = ""
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for f := range strings.SplitSeq(*scen, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 10 {
			return o, fmt.Errorf("-scenarios: %q is not a scenario (1 to 10)", f)
		}
		if !slices.Contains(o.scenarios, n) {
			o.scenarios = append(o.scenarios, n)
		}
	}
	slices.Sort(o.scenarios)
	o.runs = *runs
	if o.runs <= 0 {
		o.runs = 3
		if o.quick {
			o.runs = 1
		}
	}
	if o.timeout <= 0 {
		o.timeout = 15 * time.Minute
		if o.quick {
			o.timeout = 3 * time.Minute
		}
	}
	return o, nil
}

// bench is one invocation: options, sizes, the processes it shares.
type bench struct {
	opts   options
	sz     sizes
	rep    *report
	log    *progress
	root   string // repository root
	broker string // broker binary
	self   string // this program, re-run as the stub
	work   string // scratch dir: the broker's working directory
	dx     *directustest.Instance
	plot   latencyPlot // scenario 6's figures, for the plot
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseOptions(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	b := &bench{opts: opts, sz: defaultSizes, rep: &report{}, log: newProgress(stderr)}
	if opts.quick {
		b.sz = quickSizes
	}
	if err := raiseFileLimit(); err != nil {
		b.log.printf("warning: %v", err)
	}
	if err := b.setup(ctx); err != nil {
		return err
	}
	defer os.RemoveAll(b.work)
	defer func() {
		if b.dx != nil {
			_ = b.dx.Stop()
		}
	}()
	start := time.Now()
	meta := machine()
	scenarios := map[int]func(context.Context) error{
		1: b.fanout, 2: b.steady, 3: b.idleMemory, 4: b.ingest, 5: b.slowConsumers, 6: b.versusDirectus, 7: b.scaleOut,
		8: b.classes, 9: b.writeLatency, 10: b.clusterScale,
	}
	for _, n := range opts.scenarios {
		if ctx.Err() != nil {
			b.rep.fail(strconv.Itoa(n), fmt.Errorf("not run: %w", context.Cause(ctx)))
			continue
		}
		b.log.printf("scenario %d: %s", n, scenarioNames[n])
		if err := scenarios[n](ctx); err != nil {
			b.log.printf("scenario %d failed: %v", n, err)
			b.rep.fail(strconv.Itoa(n), err)
		}
	}
	meta["duration_s"] = time.Since(b.log.start).Seconds()
	meta["scenarios_s"] = time.Since(start).Seconds()
	meta["load_avg_end"] = loadAvg()
	meta["runs"] = opts.runs
	meta["quick"] = opts.quick
	if b.dx != nil {
		meta["directus_version"] = b.dx.Version
	}
	b.drawPlot(meta)
	fmt.Fprintf(stdout, "\ndirectus-ws-broker bench — %s, %v cores, %s; load avg %s → %s; runs %d%s; %.0fs\n",
		meta["cpu"], meta["cores"], meta["kernel"], meta["load_avg_start"], meta["load_avg_end"], opts.runs,
		map[bool]string{true: " (quick sizes)"}[opts.quick], time.Since(b.log.start).Seconds())
	b.rep.table(stdout)
	if opts.json {
		if err := b.rep.jsonLine(stdout, meta); err != nil {
			return err
		}
	}
	if b.rep.errors() {
		return errScenarios
	}
	return nil
}

var scenarioNames = map[int]string{
	1:  "one event to N subscribers (webhook POST → last receipt)",
	2:  "steady load over 100 collections, open loop",
	3:  "idle memory per subscribed connection",
	4:  "webhook ingest rate, keep-alive and Connection: close",
	5:  "slow consumers",
	6:  "side by side with Directus's own realtime",
	7:  "two instances and Redis versus one instance",
	8:  "subscribers with their own tokens: reads by access class (Directus 11.17.4)",
	9:  "from a REST write to the first frame: broker vs Directus realtime, and where the time goes",
	10: "three instances on one Redis: one read per group and event for the whole cluster (Directus 11.17.4)",
}

// setup finds the repository, the broker binary and, when a scenario needs
// it, starts the real Directus.
func (b *bench) setup(ctx context.Context) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	b.root = root
	b.broker = b.opts.brokerBin
	if b.broker == "" {
		b.broker = filepath.Join(root, "bin", "directus-ws-broker")
		if _, err := os.Stat(b.broker); err != nil {
			b.log.printf("building %s", b.broker)
			cmd := exec.CommandContext(ctx, "go", "build", "-o", b.broker, ".")
			cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("building the broker: %w", err)
			}
		}
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if b.work, err = os.MkdirTemp("", "bench-*"); err != nil {
		return err
	}
	needDirectus := slices.Contains(b.opts.scenarios, 1) || slices.Contains(b.opts.scenarios, 6)
	if needDirectus && !b.opts.noDirectus {
		b.log.printf("starting Directus %s (WEBSOCKETS_ENABLED=true)", b.opts.dxVersion)
		dx, err := directustest.Start(ctx, directustest.Options{Version: b.opts.dxVersion, Env: map[string]string{"WEBSOCKETS_ENABLED": "true"}})
		if err != nil {
			// Scenario 1 still runs with stub reads; 6 reports the error.
			b.rep.fail("setup", fmt.Errorf("starting Directus: %w", err))
		} else {
			b.dx = dx
			b.log.printf("Directus at %s", dx.URL)
		}
	}
	return nil
}

// repoRoot is the nearest directory above the working directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the bench inside the repository (no go.mod above the working directory)")
		}
		dir = parent
	}
}

// raiseFileLimit lifts the soft open-file limit to the hard one (20,000
// here); the broker, a child, inherits it.
func raiseFileLimit() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return fmt.Errorf("raising the open-file limit: %w", err)
		}
	}
	if l.Cur < 20000 {
		return fmt.Errorf("open-file limit is %d: scenario 3 needs 19,000 connections per process", l.Cur)
	}
	return nil
}

// fileLimit is the current soft open-file limit.
func fileLimit() int {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
		return 0
	}
	return int(l.Cur)
}

// machine describes where the figures come from.
func machine() map[string]any {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return map[string]any{
		"cpu": cpu, "cores": runtime.NumCPU(), "kernel": "Linux " + strings.TrimSpace(string(kernel)),
		"go": runtime.Version(), "load_avg_start": loadAvg(), "open_files": fileLimit(),
	}
}

// loadAvg is the 1-minute load average: how busy the machine was.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// progress writes timestamped progress lines to stderr.
type progress struct {
	w     io.Writer
	start time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) printf(format string, args ...any) {
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}
