//go:build linux && race

package scaleout

func init() { raceEnabled = true }
