package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// samples, which it sorts in place. Nearest rank never invents a value that
// was not measured, so "p99 of 30 events" is the 30th value, an observed
// worst case, not an interpolation. An empty input gives 0.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	return samples[rank(len(samples), p)]
}

// rank is the 0-based index of the nearest-rank p-th percentile of n sorted
// values: ceil(p/100 * n) - 1, clamped to [0, n-1]. The tiny epsilon keeps
// float error (99.9/100*1000 = 999.0000000000001) from skipping a rank.
func rank(n int, p float64) int {
	r := int(math.Ceil(p*float64(n)/100-1e-9)) - 1
	return min(max(r, 0), n-1)
}

// median of floats (the mean of the middle two for an even count), used to
// combine the results of several runs. NaN for no values.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ms converts a duration to float milliseconds, the unit of latency rows.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentileMs is percentile for float milliseconds (NaN for none).
func percentileMs(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	return s[rank(len(s), p)]
}
