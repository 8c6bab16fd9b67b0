package child

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the scanning goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAddrAndStop(t *testing.T) {
	var out syncBuffer
	// Prints its address, then waits for SIGTERM (sleep in the background,
	// so that the shell's trap runs at once).
	p, err := StartListening("server", []string{"sh", "-c", `trap 'echo bye; exit 0' TERM; echo starting; echo "listening on 127.0.0.1:1234"; sleep 100 & wait`}, Options{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	addr, err := p.Addr(t.Context(), 10*time.Second)
	if err != nil || addr != "127.0.0.1:1234" {
		t.Fatalf("Addr = %q, %v", addr, err)
	}
	if err := p.Stop(10 * time.Second); err != nil {
		t.Fatalf("a process that exits on SIGTERM: %v", err)
	}
	if !p.Exited() || p.Cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("want exit 0, got %v", p.Cmd.ProcessState)
	}
	if got := out.String(); !strings.Contains(got, "starting\n") || !strings.Contains(got, "listening on") {
		t.Fatalf("stdout not forwarded: %q", got)
	}
	if err := p.Stop(time.Second); err != nil {
		t.Fatalf("Stop again: %v", err)
	}
}

func TestAddrExited(t *testing.T) {
	p, err := StartListening("broken", []string{"sh", "-c", "echo oops >&2; exit 3"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Addr(t.Context(), 10*time.Second); !errors.Is(err, ErrExited) {
		t.Fatalf("want ErrExited, got %v", err)
	}
}

func TestAddrTimeoutLeavesItRunning(t *testing.T) {
	p, err := StartListening("silent", []string{"sleep", "100"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := p.Addr(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("want the context's error, got %v", err)
	}
	if _, err := p.Addr(t.Context(), 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "within") {
		t.Fatalf("want a timeout, got %v", err)
	}
	if p.Exited() {
		t.Fatal("Addr stopped the process")
	}
}

// A process that ignores SIGTERM is killed after the grace period, with
// everything it forked when it runs in its own group.
func TestStopKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "grandchild")
	p, err := Start("stubborn", []string{"sh", "-c", `trap '' TERM; sleep 100 & echo $! > ` + pidFile + `; wait`}, Options{Group: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	var grandchild int
	deadline := time.Now().Add(10 * time.Second)
	for grandchild == 0 {
		if b, err := os.ReadFile(pidFile); err == nil && bytes.HasSuffix(b, []byte("\n")) {
			grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		if time.Now().After(deadline) {
			t.Fatal("no grandchild pid")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.Stop(200 * time.Millisecond); err == nil {
		t.Fatal("want an error: it ignored SIGTERM")
	}
	// The grandchild is gone once it was reaped by init; Kill(pid, 0)
	// fails with ESRCH then. Until then it is a zombie at most.
	deadline = time.Now().Add(10 * time.Second)
	for syscall.Kill(grandchild, 0) == nil && !zombie(grandchild) {
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %d survived the group kill", grandchild)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] == 'Z'
}
