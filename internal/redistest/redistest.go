// Package redistest runs a private redis-server for tests, through scripts/redis.sh: bound to
// 127.0.0.1 on a free port (never the machine's shared Redis on 6379), keeping nothing on disk,
// so Restart loses every key as a production Redis without persistence does.
//
// Environment:
//
//	REDIS_TESTS=0            Start returns ErrDisabled (Require skips the test).
//	REDIS_SERVER=PATH        the redis-server binary (otherwise found on PATH, or installed by
//	                         the script with apt-get when running as root).
//
// The package only uses the standard library.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directus-ws-broker/directus-ws-broker/internal/scripttest"
)

// ErrDisabled is returned by Start when REDIS_TESTS=0.
var ErrDisabled = errors.New("redistest: disabled by REDIS_TESTS=0")

// Instance is a private redis-server.
type Instance struct {
	URL  string // redis://127.0.0.1:PORT/0
	Dir  string // the server's directory: redis.log, redis.pid, port
	Port int

	script string

	mu      sync.Mutex
	stopped bool
}

// Start runs a redis-server on a free port in a fresh temp dir and waits until it answers.
// The server also stops when the test binary exits without cleaning up.
func Start(ctx context.Context) (*Instance, error) {
	if os.Getenv("REDIS_TESTS") == "0" {
		return nil, ErrDisabled
	}
	script, err := findScript()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "redistest-*")
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	i := &Instance{Dir: dir, script: script}
	if err := i.start(ctx, ""); err != nil {
		_ = i.Stop()
		return nil, err
	}
	return i, nil
}

// Require starts Redis for a test: it skips the test when REDIS_TESTS=0, fails it when Redis
// cannot start, and stops Redis when the test ends.
func Require(t testing.TB) *Instance {
	t.Helper()
	i, err := Start(t.Context())
	if errors.Is(err, ErrDisabled) {
		t.Skip("Redis integration tests disabled (REDIS_TESTS=0)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := i.Stop(); err != nil {
			t.Errorf("stopping Redis: %v", err)
		}
	})
	return i
}

func (i *Instance) start(ctx context.Context, port string) error {
	args := []string{"start", "--dir", i.Dir, "--watch-pid", strconv.Itoa(os.Getpid())}
	if port != "" {
		args = append(args, "--port", port)
	}
	out, err := i.run(ctx, args...)
	if err != nil {
		return err
	}
	u := strings.TrimSpace(out)
	if !strings.HasPrefix(u, "redis://") {
		return fmt.Errorf("redistest: unexpected output of redis.sh start: %q", out)
	}
	p, err := strconv.Atoi(strings.TrimSuffix(u[strings.LastIndexByte(u, ':')+1:], "/0"))
	if err != nil {
		return fmt.Errorf("redistest: no port in %q", u)
	}
	i.URL, i.Port = u, p
	return nil
}

// Shutdown stops the server but keeps its directory and port, so Restart can bring it back
// on the same URL. Every key is lost.
func (i *Instance) Shutdown(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return errors.New("redistest: Shutdown after Stop")
	}
	_, err := i.run(ctx, "stop", "--dir", i.Dir)
	return err
}

// Restart stops the server (when running) and starts an empty one on the same port, as a
// Redis without persistence comes back after a crash or a deploy.
func (i *Instance) Restart(ctx context.Context) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return errors.New("redistest: Restart after Stop")
	}
	if _, err := i.run(ctx, "stop", "--dir", i.Dir); err != nil {
		return err
	}
	return i.start(ctx, strconv.Itoa(i.Port))
}

// Stop stops the server and removes its directory; idempotent.
func (i *Instance) Stop() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stopped {
		return nil
	}
	i.stopped = true
	// A fresh context: Stop often runs because the caller's context is already done.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := i.run(ctx, "stop", "--dir", i.Dir)
	if rmErr := os.RemoveAll(i.Dir); err == nil && rmErr != nil {
		err = fmt.Errorf("redistest: %w", rmErr)
	}
	return err
}

// Log returns the server's log so far (for failure messages).
func (i *Instance) Log() string {
	b, _ := os.ReadFile(filepath.Join(i.Dir, "redis.log"))
	return string(b)
}

func (i *Instance) run(ctx context.Context, args ...string) (string, error) {
	out, err := scripttest.Run(ctx, i.script, args...)
	if err != nil {
		return out, fmt.Errorf("redistest: %w", err)
	}
	return out, nil
}

// findScript finds scripts/redis.sh in the repository root: the nearest directory holding
// go.mod, walking up from the working directory (go test runs in the package's directory).
func findScript() (string, error) {
	script, err := scripttest.Find("redis.sh")
	if err != nil {
		return "", fmt.Errorf("redistest: %w", err)
	}
	return script, nil
}
