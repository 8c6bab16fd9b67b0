package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/child"
)

// proc is a child process that prints "listening on ADDR" once it serves:
// the broker, or this program re-run as the Directus stub.
type proc struct {
	name string
	addr string
	pid  int
	tail *tailBuffer
	c    *child.Process
}

// startProc starts path with args and env (added to this process's
// environment) in dir, and waits for its "listening on" line.
func startProc(ctx context.Context, name, path string, args, env []string, dir string) (*proc, error) {
	return startProcTap(ctx, name, path, args, env, dir, nil)
}

// startProcTap is startProc with tap seeing every line of the process's
// stderr (its log).
func startProcTap(ctx context.Context, name, path string, args, env []string, dir string, tap func([]byte)) (*proc, error) {
	tail := &tailBuffer{max: 8 << 10, tap: tap}
	c, err := child.StartListening(name, append([]string{path}, args...), child.Options{
		Env: append(os.Environ(), env...), Dir: dir, Stderr: tail,
	})
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, pid: c.Pid(), tail: tail, c: c}
	if p.addr, err = c.Addr(ctx, 30*time.Second); err != nil {
		p.stop()
		return nil, fmt.Errorf("%w:\n%s", err, tail)
	}
	return p, nil
}

// stop ends the process: SIGTERM, then SIGKILL after two seconds. Callers
// close their connections first, so the broker's graceful shutdown is quick.
func (p *proc) stop() { _ = p.c.Stop(2 * time.Second) }

// alive reports an error when the process has exited.
func (p *proc) alive() error {
	if p.c.Exited() {
		return fmt.Errorf("%s exited: %s\n%s", p.name, p.c.Cmd.ProcessState, p.tail)
	}
	return nil
}

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// which the Linux ABI fixes at 100 on every architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpuTime is the user+system CPU time the process has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) may contain spaces and
// parentheses, so counting starts after its last ')'.
func parseStatCPU(stat []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state): utime is field 14, f[11]; stime f[12].
	if len(f) < 13 {
		return 0, errors.New("stat: too few fields")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: bad utime/stime %q %q", f[11], f[12])
	}
	return time.Duration(u+s) * clockTick, nil
}

// rss is the resident set size of the process in bytes (VmRSS).
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("status: no VmRSS")
}

// settledRSS samples the RSS every 250ms until two samples a second apart
// differ by less than 1% (or 8s pass) and returns the last one: right
// after a burst of handshakes the Go heap is still shrinking.
func settledRSS(pid int) (int64, error) {
	prev, err := rss(pid)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(time.Second)
		cur, err := rss(pid)
		if err != nil {
			return 0, err
		}
		if d := cur - prev; d < 0 && -d < prev/100 || d >= 0 && d < prev/100 {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}

// metrics fetches the broker's /metrics and returns its samples by name.
func metrics(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: HTTP %d", resp.StatusCode)
	}
	return parseMetrics(b), nil
}

// parseMetrics reads the Prometheus text format's unlabelled samples.
func parseMetrics(b []byte) map[string]float64 {
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
			// A labelled series also counts towards its bare name (the sum
			// over labels: broker_connections over both protocols).
			if name, _, labelled := strings.Cut(f[0], "{"); labelled {
				out[name] += v
			}
		}
	}
	return out
}

// tailBuffer keeps the last max bytes written to it (a child's stderr).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
	// tap, when set, sees every complete line written.
	tap     func(line []byte)
	partial []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tap != nil {
		t.partial = append(t.partial, p...)
		for {
			i := bytes.IndexByte(t.partial, '\n')
			if i < 0 {
				break
			}
			t.tap(t.partial[:i])
			t.partial = t.partial[i+1:]
		}
	}
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// cpuMeter measures the CPU the broker, the stub and this process use over
// an interval, to show which of them a scenario saturates.
type cpuMeter struct {
	pids  [3]int
	start [3]time.Duration
	at    time.Time
}

func newCPUMeter(r *rig) *cpuMeter {
	m := &cpuMeter{pids: [3]int{r.broker.pid, r.stub.pid, os.Getpid()}, at: time.Now()}
	for i, pid := range m.pids {
		m.start[i], _ = cpuTime(pid)
	}
	return m
}

// shares returns the CPU of broker, stub and bench since the meter was made,
// in percent of one core.
func (m *cpuMeter) shares() (broker, stub, bench float64) {
	wall := time.Since(m.at)
	var out [3]float64
	for i, pid := range m.pids {
		cur, _ := cpuTime(pid)
		out[i] = 100 * float64(cur-m.start[i]) / float64(wall)
	}
	return out[0], out[1], out[2]
}
