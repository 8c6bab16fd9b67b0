package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// The plot: time from a REST write in Directus to its last subscriber
// against the number of subscribers, from scenario 6 — the broker and
// Directus's own realtime for the same writes, and the broker alone. It is
// drawn by gnuplot (Debian's gnuplot-nox; scripts/ensure-gnuplot.sh),
// PNG or SVG after the file's extension.

// latencyPoint is one subscriber count's samples, in milliseconds.
type latencyPoint struct {
	Subscribers int
	Samples     []float64
}

// latencySeries is one line of the plot.
type latencySeries struct {
	Name   string
	Points []latencyPoint
}

// The series scenario 6 fills, in the plot's order.
const (
	seriesBroker   = "broker (Directus realtime loaded too)"
	seriesDirectus = "Directus realtime (same writes)"
	seriesAlone    = "broker alone"
)

// latencyPlot collects the series while the scenarios run.
type latencyPlot struct {
	mu     sync.Mutex
	series []latencySeries
}

// add records the samples (ms) of one subscriber count of a series.
func (p *latencyPlot) add(series string, subscribers int, samples []float64) {
	if len(samples) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.IndexFunc(p.series, func(s latencySeries) bool { return s.Name == series })
	if i < 0 {
		p.series = append(p.series, latencySeries{Name: series})
		i = len(p.series) - 1
	}
	p.series[i].Points = append(p.series[i].Points, latencyPoint{subscribers, slices.Clone(samples)})
}

// snapshot returns the series in a fixed order: the named ones first.
func (p *latencyPlot) snapshot() []latencySeries {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Clone(p.series)
	order := []string{seriesBroker, seriesDirectus, seriesAlone}
	rank := func(s latencySeries) int {
		if i := slices.Index(order, s.Name); i >= 0 {
			return i
		}
		return len(order)
	}
	slices.SortStableFunc(out, func(a, b latencySeries) int { return rank(a) - rank(b) })
	return out
}

// errNoPlotData is returned by writePlot when no series has a point (the
// scenario did not run).
var errNoPlotData = errors.New("no figures to plot (scenario 6 did not run)")

// writePlot draws series into path (.png or .svg) with gnuplot: subscriber
// count across, time to the last subscriber up (log scale, ms),
// one line through each series' medians, labelled with their values, and
// every sample as a dot. caption goes under the title (the machine, the
// run).
func writePlot(ctx context.Context, path, caption string, series []latencySeries) error {
	if !slices.ContainsFunc(series, func(s latencySeries) bool { return len(s.Points) > 0 }) {
		return errNoPlotData
	}
	terminal, err := plotTerminal(path)
	if err != nil {
		return err
	}
	gnuplot, err := exec.LookPath("gnuplot")
	if err != nil {
		return fmt.Errorf("plot: gnuplot is not installed (scripts/ensure-gnuplot.sh installs it; -plot '' skips the plot): %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gnuplot)
	cmd.Stdin = strings.NewReader(gnuplotScript(terminal, path, caption, series))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("plot: gnuplot: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// plotTerminal is gnuplot's terminal for the file's extension.
func plotTerminal(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png":
		return `pngcairo size 1100,650 font "sans,11"`, nil
	case ".svg":
		return `svg size 1100,650 dynamic font "sans,11"`, nil
	}
	return "", fmt.Errorf("plot: %s: want a .png or .svg file", path)
}

// plotColors are the series' colors, in order.
var plotColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b"}

// gnuplotScript is the whole gnuplot program, data included (inline data
// blocks), so that nothing but the output file is written.
func gnuplotScript(terminal, path, caption string, series []latencySeries) string {
	var b strings.Builder
	fmt.Fprintf(&b, "set terminal %s\n", terminal)
	fmt.Fprintf(&b, "set output %s\n", gnuplotString(path))
	// Names and captions are text, never markup.
	b.WriteString("set termoption noenhanced\n")
	b.WriteString("set title 'REST write in Directus → its last subscriber received it (scenario 6)'\n")
	if caption != "" {
		fmt.Fprintf(&b, "set bmargin 5\nset label 1 %s at screen 0.5, screen 0.025 center font \",9\"\n", gnuplotString(caption))
	}
	b.WriteString("set xlabel \"subscribers\"\n")
	b.WriteString("set ylabel \"time to the last subscriber (ms; line: median, dots: each write)\"\n")
	// Linear across (the cost per subscriber is the slope), logarithmic up:
	// the series differ tenfold.
	b.WriteString("set logscale y\nset grid xtics ytics mytics\nset key top left box opaque\n")

	var counts []int
	for _, s := range series {
		for _, p := range s.Points {
			if !slices.Contains(counts, p.Subscribers) {
				counts = append(counts, p.Subscribers)
			}
		}
	}
	slices.Sort(counts)
	var tics []string
	for _, n := range counts {
		tics = append(tics, fmt.Sprintf("%s %d", gnuplotString(thousands(n)), n))
	}
	fmt.Fprintf(&b, "set xtics (%s)\n", strings.Join(tics, ", "))
	if len(counts) > 0 {
		fmt.Fprintf(&b, "set xrange [0:%g]\n", float64(counts[len(counts)-1])*1.15)
	}

	var plots []string
	for i, s := range series {
		if len(s.Points) == 0 {
			continue
		}
		points := slices.Clone(s.Points)
		slices.SortFunc(points, func(a, b latencyPoint) int { return a.Subscribers - b.Subscribers })
		fmt.Fprintf(&b, "$median%d << EOD\n", i)
		for _, p := range points {
			fmt.Fprintf(&b, "%d %g\n", p.Subscribers, median(p.Samples))
		}
		fmt.Fprintf(&b, "EOD\n$samples%d << EOD\n", i)
		for _, p := range points {
			for _, v := range p.Samples {
				fmt.Fprintf(&b, "%d %g\n", p.Subscribers, v)
			}
		}
		b.WriteString("EOD\n")
		color := gnuplotString(plotColors[i%len(plotColors)])
		plots = append(plots,
			fmt.Sprintf("$median%d using 1:2 with linespoints lw 2 pt 7 ps 1.2 lc rgb %s title %s", i, color, gnuplotString(s.Name)),
			fmt.Sprintf("$samples%d using 1:2 with points pt 6 ps 0.7 lc rgb %s notitle", i, color),
			fmt.Sprintf(`$median%d using 1:2:(sprintf("%%.0f ms", $2)) with labels offset 4.5,0.6 tc rgb %s notitle`, i, color),
		)
	}
	fmt.Fprintf(&b, "plot %s\n", strings.Join(plots, ", \\\n     "))
	return b.String()
}

// gnuplotString quotes s for gnuplot: single quotes take everything
// literally but themselves, which are doubled.
func gnuplotString(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// drawPlot writes the -plot file from what scenario 6 measured; a failure
// is reported as a row of the table ("plot").
func (b *bench) drawPlot(meta map[string]any) {
	if b.opts.plot == "" {
		return
	}
	caption := fmt.Sprintf("%v, %v cores, %v, %v, Directus %v; medians of each size's writes; %s",
		meta["cpu"], meta["cores"], meta["kernel"], meta["go"], meta["directus_version"], time.Now().UTC().Format("2006-01-02"))
	switch err := writePlot(context.Background(), b.opts.plot, caption, b.plot.snapshot()); {
	case err == nil:
		b.log.printf("plot written: %s", b.opts.plot)
	case errors.Is(err, errNoPlotData):
		b.log.printf("no plot: %v", err)
	default:
		b.rep.fail("plot", err)
	}
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
