// Package scripttest runs the repository's service scripts (scripts/*.sh)
// for the test harnesses that start real services (directustest,
// redistest).
package scripttest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Find returns the path of scripts/<name> in the repository root: the
// nearest directory holding go.mod, walking up from the working directory
// (go test runs in the package's directory).
func Find(name string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			script := filepath.Join(dir, "scripts", name)
			if _, err := os.Stat(script); err != nil {
				return "", err
			}
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Run runs script with args and returns its stdout. Its stderr (progress,
// errors) goes to os.Stderr as it comes and into the error.
func Run(ctx context.Context, script string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(&stderr, os.Stderr)
	// The services themselves do not hold our pipes (the scripts redirect
	// them to their logs), but never wait forever on a grandchild that might.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(script), args[0], err, stderr.String())
	}
	return stdout.String(), nil
}
