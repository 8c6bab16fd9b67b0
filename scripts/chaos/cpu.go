package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuTimes are the CPU seconds used so far by the broker, by this process
// (the clients and publishers) and by the whole machine, at a time: two of
// them tell who kept the cores busy in between, so a latency measured on a
// saturated machine is told apart from one the broker made.
type cpuTimes struct {
	broker, harness, machine float64
	at                       time.Time
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

func (p *brokerProc) cpuTimes() cpuTimes {
	t := cpuTimes{at: time.Now()}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.c.Pid())); err == nil {
		// After the command's name in parentheses: state is field 3, utime
		// and stime are fields 14 and 15.
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			t.broker = (u + s) / clockTicks
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		t.harness = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		if f := strings.Fields(line); len(f) > 5 && f[0] == "cpu" {
			for i, v := range f[1:] {
				n, _ := strconv.ParseFloat(v, 64)
				if i != 3 && i != 4 { // idle, iowait
					t.machine += n / clockTicks
				}
			}
		}
	}
	return t
}

// busy says how many cores were busy from a to b, and by whom.
func busy(a, b cpuTimes) string {
	secs := b.at.Sub(a.at).Seconds()
	return fmt.Sprintf("%.1f of %d cores busy (broker %.1f, clients %.1f)",
		(b.machine-a.machine)/secs, runtime.NumCPU(), (b.broker-a.broker)/secs, (b.harness-a.harness)/secs)
}
