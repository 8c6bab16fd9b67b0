//go:build race

package broker

// raceEnabled: the race detector's instrumentation allocates on its own,
// so allocation counts mean nothing under -race.
const raceEnabled = true
