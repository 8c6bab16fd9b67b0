// Package child runs the processes that the tests, the benchmark and the
// chaos tool start — the broker binary, the benchmark's Directus stub,
// nginx, Caddy, podman — so that none outlives its starter: each is killed
// when the starter dies (Pdeathsig), stops gracefully and then forcibly,
// and a server's address is read from the "listening on ADDR" line it
// prints on stdout.
package child

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Options says how to start a process.
type Options struct {
	// Env is the process's whole environment; nil inherits this one's.
	Env []string
	Dir string
	// Stdout and Stderr receive its output; nil discards it.
	Stdout, Stderr io.Writer
	// Group runs it in its own process group, so that Stop and Kill reach
	// everything it forked (nginx's workers, podman's helpers).
	Group bool
}

// Process is a started child.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	opts Options
	done chan struct{}
	addr chan string // with StartListening: the address, once
}

// ErrExited is returned by Addr when the process ended before it printed
// its address; its log says why (a taken port, a bad configuration).
var ErrExited = errors.New("exited before listening")

// Start starts argv.
func Start(name string, argv []string, o Options) (*Process, error) {
	return start(name, argv, o, false)
}

// StartListening starts argv and watches its stdout for the "listening on
// ADDR" line (every line still reaches Options.Stdout); Addr waits for it.
func StartListening(name string, argv []string, o Options) (*Process, error) {
	return start(name, argv, o, true)
}

func start(name string, argv []string, o Options, listening bool) (*Process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env, cmd.Dir, cmd.Stderr = o.Env, o.Dir, o.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: o.Group, Pdeathsig: syscall.SIGKILL}
	p := &Process{Name: name, Cmd: cmd, opts: o, done: make(chan struct{})}
	var stdout io.Reader
	if listening {
		pipe, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		stdout, p.addr = pipe, make(chan string, 1)
	} else {
		cmd.Stdout = o.Stdout
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if stdout != nil {
		go p.scan(stdout)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// scan reads stdout to its end (a full pipe would block the child),
// forwarding every line and handing the first address to Addr.
func (p *Process) scan(stdout io.Reader) {
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if p.opts.Stdout != nil {
			_, _ = io.WriteString(p.opts.Stdout, line+"\n")
		}
		if a, ok := strings.CutPrefix(line, "listening on "); ok {
			select {
			case p.addr <- strings.TrimSpace(a):
			default:
			}
		}
	}
	_, _ = io.Copy(io.Discard, stdout)
}

// Addr waits up to wait for the address a process started with
// StartListening prints. It fails with ErrExited when the process ended
// first, and leaves the process running on a timeout or when ctx ends.
func (p *Process) Addr(ctx context.Context, wait time.Duration) (string, error) {
	if p.addr == nil {
		return "", fmt.Errorf("%s: not started with StartListening", p.Name)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case a := <-p.addr:
		return a, nil
	case <-p.done:
		select {
		case a := <-p.addr: // printed just before it ended
			return a, nil
		default:
		}
		return "", fmt.Errorf("%s %w (%s)", p.Name, ErrExited, p.Cmd.ProcessState)
	case <-timer.C:
		return "", fmt.Errorf("%s did not print its address within %s", p.Name, wait)
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Done is closed once the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Pid is the process's id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// signal sends sig to the process, or to its group.
func (p *Process) signal(sig syscall.Signal) {
	if p.opts.Group {
		_ = syscall.Kill(-p.Cmd.Process.Pid, sig)
		return
	}
	_ = p.Cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits up to grace for the exit, then kills. It
// reports an error when the process had to be killed. With Group, whatever
// the process left behind in its group is killed too. Idempotent.
func (p *Process) Stop(grace time.Duration) error {
	var err error
	if !p.Exited() {
		p.signal(syscall.SIGTERM)
		timer := time.NewTimer(grace)
		select {
		case <-p.done:
		case <-timer.C:
			err = fmt.Errorf("%s still running %s after SIGTERM; killed", p.Name, grace)
		}
		timer.Stop()
	}
	p.Kill()
	return err
}

// Kill ends the process at once (SIGKILL), as a crash or an OOM kill
// would, and waits until it is gone.
func (p *Process) Kill() {
	if !p.Exited() {
		p.signal(syscall.SIGKILL)
		<-p.done
	}
	if p.opts.Group {
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	}
}
