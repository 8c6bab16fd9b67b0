package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"text/tabwriter"
)

// target is a figure a result should reach: value op limit.
type target struct {
	op    string // "<=" or ">="
	limit float64
}

func atMost(v float64) *target  { return &target{"<=", v} }
func atLeast(v float64) *target { return &target{">=", v} }

// about is a ratio within limit of 1 (a model checked against a run).
func about(within float64) *target { return &target{"~", within} }

func (t *target) met(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	if t.op == "~" {
		return math.Abs(v-1) <= t.limit
	}
	if t.op == "<=" {
		return v <= t.limit
	}
	return v >= t.limit
}

// result is one row of the table.
type result struct {
	Scenario string    `json:"scenario"`
	Metric   string    `json:"metric"`
	Value    float64   `json:"value"`
	Unit     string    `json:"unit"`
	Target   string    `json:"target,omitempty"`
	Status   string    `json:"status"` // pass, fail, info, error, skipped
	Runs     []float64 `json:"runs,omitempty"`
	Note     string    `json:"note,omitempty"`
}

// report collects the rows; scenarios add to it as they finish.
type report struct {
	mu   sync.Mutex
	rows []result
}

// add records the median of values (one per run) against tgt (nil: an
// informational figure).
func (r *report) add(scenario, metric, unit string, tgt *target, values ...float64) {
	res := result{Scenario: scenario, Metric: metric, Unit: unit, Value: median(values), Status: "info"}
	if len(values) > 1 {
		res.Runs = values
	}
	if tgt != nil {
		res.Target = fmt.Sprintf("%s %s", map[string]string{"<=": "≤", ">=": "≥"}[tgt.op], formatValue(tgt.limit))
		if tgt.op == "~" {
			res.Target = fmt.Sprintf("1 ± %s", formatValue(tgt.limit))
		}
		res.Status = "fail"
		if tgt.met(res.Value) {
			res.Status = "pass"
		}
	}
	r.mu.Lock()
	r.rows = append(r.rows, res)
	r.mu.Unlock()
}

// note attaches a note to the last row.
func (r *report) note(text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.rows); n > 0 {
		r.rows[n-1].Note = text
	}
}

// fail records that a scenario could not run to the end.
func (r *report) fail(scenario string, err error) {
	r.mu.Lock()
	r.rows = append(r.rows, result{Scenario: scenario, Metric: "error", Value: math.NaN(), Status: "error", Note: oneLine(err.Error())})
	r.mu.Unlock()
}

// skip records that a scenario (or part of it) did not run, and why.
func (r *report) skip(scenario, metric, why string) {
	r.mu.Lock()
	r.rows = append(r.rows, result{Scenario: scenario, Metric: metric, Value: math.NaN(), Status: "skipped", Note: why})
	r.mu.Unlock()
}

// errors reports whether any scenario failed to run.
func (r *report) errors() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, row := range r.rows {
		if row.Status == "error" {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func formatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "-"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// table writes the rows as an aligned table.
func (r *report) table(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\tvalue\ttarget\tresult\tnote")
	for _, row := range r.rows {
		val := formatValue(row.Value)
		if row.Unit != "" && val != "-" {
			val += " " + row.Unit
		}
		tgt := row.Target
		if tgt != "" && row.Unit != "" {
			tgt += " " + row.Unit
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", row.Scenario, row.Metric, val, tgt, row.Status, row.Note)
	}
	_ = tw.Flush()
}

// jsonLine writes everything as one JSON object on one line. NaN values
// (errors, skips) become null.
func (r *report) jsonLine(w io.Writer, meta map[string]any) error {
	r.mu.Lock()
	type row struct {
		result
		Value *float64 `json:"value"`
	}
	rows := make([]row, len(r.rows))
	for i, res := range r.rows {
		rows[i].result = res
		if !math.IsNaN(res.Value) {
			v := res.Value
			rows[i].Value = &v
		}
	}
	r.mu.Unlock()
	out := map[string]any{"bench": "directus-ws-broker", "results": rows}
	for k, v := range meta {
		out[k] = v
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
