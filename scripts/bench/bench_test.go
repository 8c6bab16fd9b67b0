package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(vs ...int) []time.Duration {
		out := make([]time.Duration, len(vs))
		for i, v := range vs {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100..1, unsorted
	}
	tests := []struct {
		name    string
		samples []time.Duration
		p       float64
		want    time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value is every percentile", ms(7), 99, 7 * time.Millisecond},
		{"median of odd count", ms(3, 1, 2), 50, 2 * time.Millisecond},
		{"median of even count is the lower middle (nearest rank)", ms(4, 1, 3, 2), 50, 2 * time.Millisecond},
		{"p99 of 100 is the 99th value", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the maximum", ms(hundred...), 100, 100 * time.Millisecond},
		{"p99 of 30 is the maximum", ms(hundred[70:]...), 99, 30 * time.Millisecond},
		{"p50 of 100", ms(hundred...), 50, 50 * time.Millisecond},
		{"p0 clamps to the minimum", ms(5, 9), 0, 5 * time.Millisecond},
		{"p1 of 100 is the minimum", ms(hundred...), 1, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.samples, tt.p); got != tt.want {
				t.Errorf("percentile(p%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestRank(t *testing.T) {
	for _, tt := range []struct {
		n    int
		p    float64
		want int
	}{{1, 50, 0}, {2, 50, 0}, {3, 50, 1}, {10, 90, 8}, {10, 91, 9}, {1000, 99, 989}, {1000, 99.9, 998}, {5, 150, 4}} {
		if got := rank(tt.n, tt.p); got != tt.want {
			t.Errorf("rank(%d, %v) = %d, want %d", tt.n, tt.p, got, tt.want)
		}
	}
}

func TestMedian(t *testing.T) {
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing should be NaN")
	}
	in := []float64{5, 1, 3}
	if got := median(in); got != 3 {
		t.Errorf("median odd = %v", got)
	}
	if in[0] != 5 {
		t.Error("median must not reorder its input")
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median even = %v", got)
	}
}

func TestBrokerKey(t *testing.T) {
	tests := []struct {
		frame string
		want  int
		ok    bool
	}{
		{`{"type":"SUBSCRIPTION","action":"update","collection":"c","keys":["12"],"payload":{"title":"x"},"data":[{"id":12,"title":"x"}],"id":"1732890000000-7"}`, 12, true},
		{`{"type":"SUBSCRIPTION","action":"create","collection":"c","keys":[4],"payload":{},"data":[],"id":"1-1"}`, 4, true},
		{`{"type":"SUBSCRIPTION","action":"update","collection":"c","keys":["7","8"],"payload":{},"data":[]}`, 7, true},
		{`{"type":"SUBSCRIPTION","action":"update","collection":"c","keys":[ "9"],"payload":{}}`, 9, true},
		// a payload that mentions "keys" comes after the frame's own keys
		{`{"type":"SUBSCRIPTION","action":"update","collection":"c","keys":["3"],"payload":{"keys":["99"]}}`, 3, true},
		{`{"collection":"c","type":"SUBSCRIBED"}`, 0, false},
		{`{"data":{"code":"EVENTS_MISSED"},"type":"ERROR"}`, 0, false},
		{`{"type":"SUBSCRIPTION","keys":["abc"]}`, 0, false},
		{`{"type":"SUBSCRIPTION","keys":["12abc"]}`, 0, false},
		{`{"type":"SUBSCRIPTION","keys":[]}`, 0, false},
		{`{"type":"SUBSCRIPTION","keys":["`, 0, false},
		{`{"type":"SUBSCRIPTION","keys":["1234567890123456789"]}`, 0, false},
		{``, 0, false},
	}
	for _, tt := range tests {
		got, ok := brokerKey([]byte(tt.frame))
		if got != tt.want || ok != tt.ok {
			t.Errorf("brokerKey(%s) = %d, %v; want %d, %v", tt.frame, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDirectusKey(t *testing.T) {
	tests := []struct {
		frame string
		want  int
		ok    bool
	}{
		{`{"type":"subscription","event":"update","data":[{"id":7,"title":"w"}],"uid":"s"}`, 7, true},
		{`{"type":"subscription","event":"update","data":[{"title":"w","id":"15"}],"uid":"s"}`, 15, true},
		{`{"type":"subscription","event":"init","data":[{"id":1},{"id":2}],"uid":"s"}`, 0, false},
		{`{"type":"subscription","event":"create","data":[{"id":3}]}`, 0, false},
		{`{"type":"ping"}`, 0, false},
		{`{"type":"auth","status":"ok"}`, 0, false},
	}
	for _, tt := range tests {
		got, ok := directusKey([]byte(tt.frame))
		if got != tt.want || ok != tt.ok {
			t.Errorf("directusKey(%s) = %d, %v; want %d, %v", tt.frame, got, ok, tt.want, tt.ok)
		}
	}
}

// The key found in a frame is the key the webhook body carried.
func TestWebhookBodyRoundTrip(t *testing.T) {
	body := webhookBody("c_1", 4711)
	if !bytes.Contains(body, []byte(`"keys":["4711"]`)) || !bytes.Contains(body, []byte(`"event":"c_1.items.update"`)) {
		t.Fatalf("body %s", body)
	}
	if k, ok := brokerKey(body); !ok || k != 4711 {
		t.Errorf("brokerKey(body) = %d, %v", k, ok)
	}
}

func TestTracker(t *testing.T) {
	tr := newTracker(10, 3)
	tr.arm(11, 2)
	tr.markSent(11, 1000)
	if lat, ok := tr.observe(11, 5000); !ok || lat != 4000 {
		t.Errorf("observe = %d, %v", lat, ok)
	}
	tr.observe(11, 3000) // out of order: last stays 5000
	if d, complete := tr.wait(11, time.Second); !complete || d != 4000 {
		t.Errorf("wait = %v, %v", d, complete)
	}
	if _, ok := tr.observe(13, 1); ok || tr.unknown.Load() != 1 {
		t.Error("key outside the range must count as unknown")
	}
	if _, complete := tr.wait(12, 5*time.Millisecond); complete {
		t.Error("an event without deliveries cannot be complete")
	}
	want, got := tr.counts(10, 13)
	if want != 2 || got != 2 {
		t.Errorf("counts = %d, %d", want, got)
	}
	s := tr.sibling()
	if s.base != tr.base || s.first != tr.first || s.size() != tr.size() || s.events[1].got.Load() != 0 {
		t.Error("sibling must share base and range, not counts")
	}
}

func TestParseStatCPU(t *testing.T) {
	// comm with spaces and parentheses; utime 250, stime 50 ticks
	stat := "1234 (my (odd) proc) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 200"
	got, err := parseStatCPU([]byte(stat))
	if err != nil || got != 3*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 3s", got, err)
	}
	if _, err := parseStatCPU([]byte("1234 (x) S 1")); err == nil {
		t.Error("short stat line must fail")
	}
}

func TestParseMetrics(t *testing.T) {
	m := parseMetrics([]byte("# TYPE broker_reads_total counter\nbroker_reads_total 42\nbroker_slow_consumers_evicted_total 3\n\nbad line here\n"))
	if m["broker_reads_total"] != 42 || m["broker_slow_consumers_evicted_total"] != 3 || len(m) != 2 {
		t.Errorf("parseMetrics = %v", m)
	}
	m = parseMetrics([]byte("broker_connections{protocol=\"extension\"} 3\nbroker_connections{protocol=\"realtime\"} 4\n"))
	if m["broker_connections"] != 7 || m[`broker_connections{protocol="extension"}`] != 3 {
		t.Errorf("labelled series: parseMetrics = %v", m)
	}
}

func TestReport(t *testing.T) {
	var r report
	r.add("1", "last of 1,000", "ms", atMost(15), 12, 20, 14)
	r.add("4", "ingest", "events/s", atLeast(10000), 9000)
	r.add("3", "info", "KiB", nil, 11)
	r.skip("6", "ratio", "no Directus")
	if r.rows[0].Value != 14 || r.rows[0].Status != "pass" || r.rows[1].Status != "fail" || r.rows[2].Status != "info" {
		t.Errorf("rows = %+v", r.rows)
	}
	var table, js strings.Builder
	r.table(&table)
	if !strings.Contains(table.String(), "≤ 15 ms") || !strings.Contains(table.String(), "skipped") {
		t.Errorf("table:\n%s", table.String())
	}
	if err := r.jsonLine(&js, map[string]any{"cores": 2}); err != nil {
		t.Fatal(err)
	}
	if strings.Count(js.String(), "\n") != 1 || !strings.Contains(js.String(), `"value":null`) || !strings.Contains(js.String(), `"cores":2`) {
		t.Errorf("json line: %s", js.String())
	}
}

func TestThousands(t *testing.T) {
	for in, want := range map[int]string{5: "5", 1000: "1,000", 19000: "19,000", 1234567: "1,234,567"} {
		if got := thousands(in); got != want {
			t.Errorf("thousands(%d) = %q", in, got)
		}
	}
}
