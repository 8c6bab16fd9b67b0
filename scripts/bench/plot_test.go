package main

import (
	"bytes"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var testSeries = []latencySeries{
	{Name: seriesBroker, Points: []latencyPoint{{5000, []float64{160, 150, 170}}, {1000, []float64{58.5, 60}}}},
	{Name: seriesDirectus, Points: []latencyPoint{{1000, []float64{643}}, {5000, []float64{2892}}}},
	{Name: "it's quoted", Points: []latencyPoint{{1, []float64{12}}}},
}

func TestLatencyPlotCollects(t *testing.T) {
	var p latencyPlot
	p.add(seriesAlone, 1000, []float64{41, 42})
	p.add(seriesDirectus, 1000, []float64{643})
	p.add(seriesBroker, 1000, []float64{58})
	p.add(seriesBroker, 5000, []float64{160})
	p.add(seriesBroker, 10000, nil) // nothing measured: no point
	got := p.snapshot()
	var names []string
	for _, s := range got {
		names = append(names, s.Name)
	}
	if strings.Join(names, "|") != seriesBroker+"|"+seriesDirectus+"|"+seriesAlone {
		t.Fatalf("series order %v", names)
	}
	if len(got[0].Points) != 2 || got[0].Points[1].Subscribers != 5000 {
		t.Fatalf("broker points %+v", got[0].Points)
	}
}

func TestGnuplotScript(t *testing.T) {
	script := gnuplotScript("svg", "/tmp/o'ut.svg", "2 cores, Linux", testSeries)
	for _, want := range []string{
		"set output '/tmp/o''ut.svg'\n",
		"set logscale y\n",
		// Medians, by subscriber count.
		"$median0 << EOD\n1000 59.25\n5000 160\nEOD\n",
		"$samples0 << EOD\n1000 58.5\n1000 60\n5000 160\n5000 150\n5000 170\nEOD\n",
		"$median1 << EOD\n1000 643\n5000 2892\nEOD\n",
		"title '" + seriesDirectus + "'",
		"title 'it''s quoted'",
		`set xtics ('1' 1, '1,000' 1000, '5,000' 5000)`,
		"set label 1 '2 cores, Linux'",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("script lacks %q:\n%s", want, script)
		}
	}
}

// TestWritePlot draws with the real gnuplot (skipped when it is missing)
// and checks the files are images of the asked size.
func TestWritePlot(t *testing.T) {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		t.Skip("gnuplot not installed (scripts/ensure-gnuplot.sh)")
	}
	dir := t.TempDir()
	pngPath := filepath.Join(dir, "sub", "latency.png")
	if err := writePlot(t.Context(), pngPath, "test", testSeries); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(b))
	if err != nil || cfg.Width != 1100 || cfg.Height != 650 {
		t.Fatalf("PNG: %v, %dx%d", err, cfg.Width, cfg.Height)
	}
	svgPath := filepath.Join(dir, "latency.svg")
	if err := writePlot(t.Context(), svgPath, "", testSeries); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(svgPath); !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("Directus realtime")) {
		t.Fatalf("SVG without the plot: %.200s", b)
	}
	if err := writePlot(t.Context(), filepath.Join(dir, "x.pdf"), "", testSeries); err == nil {
		t.Error("a .pdf path was accepted")
	}
	if err := writePlot(t.Context(), filepath.Join(dir, "none.png"), "", nil); err != errNoPlotData {
		t.Errorf("no series: %v, want errNoPlotData", err)
	}
}

func TestPlotOption(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "bench-results/latency.png"},
		{[]string{"-plot", "out.svg"}, "out.svg"},
		{[]string{"-plot", ""}, ""},
		{[]string{"-quick"}, ""}, // the smoke run draws nothing unless asked
		{[]string{"-quick", "-plot", "q.png"}, "q.png"},
	} {
		o, err := parseOptions(tc.args, io.Discard)
		if err != nil || o.plot != tc.want {
			t.Errorf("parseOptions(%q): plot %q, %v; want %q", tc.args, o.plot, err, tc.want)
		}
	}
}
