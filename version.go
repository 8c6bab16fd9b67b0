package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// version and commit are set at link time by the Makefile's build target
// and the Dockerfile:
//
//	go build -ldflags "-X main.version=$(git describe --tags --always --dirty) -X main.commit=$(git rev-parse HEAD)"
//
// A plain `go build` or `go install` leaves them empty; buildVersion then
// falls back to what the Go toolchain stamped into the binary.
var (
	version string
	commit  string
)

// buildInfo is what `directus-ws-broker version` prints and the start-up
// log line carries.
type buildInfo struct {
	Version   string // the release (git describe), or the commit when untagged
	Commit    string // the full commit hash, "-dirty" when built from a modified tree
	GoVersion string
}

// buildVersion returns the binary's version: the link-time values first,
// then the module version and VCS stamp of debug.ReadBuildInfo (set by
// `go build` inside a git checkout, `go install module@version`), then
// "dev" and "unknown".
func buildVersion() buildInfo {
	info := buildInfo{Version: version, Commit: commit, GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if ok {
		if info.Commit == "" {
			info.Commit = vcsCommit(bi)
		}
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
	}
	if info.Version == "" && info.Commit != "" {
		// As git describe --always prints it for an untagged commit.
		info.Version = shortCommit(info.Commit)
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

// vcsCommit is the vcs.revision stamp, with "-dirty" when vcs.modified.
func vcsCommit(bi *debug.BuildInfo) string {
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" && modified == "true" {
		rev += "-dirty"
	}
	return rev
}

// shortCommit is the first 12 characters of a commit hash, keeping a
// "-dirty" suffix.
func shortCommit(c string) string {
	const n = 12
	hash, dirty := strings.CutSuffix(c, "-dirty")
	if len(hash) > n {
		hash = hash[:n]
	}
	if dirty {
		hash += "-dirty"
	}
	return hash
}

// versionCommand prints the version, the commit and the Go version.
func versionCommand(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("version: unexpected argument %q", args[0])}
	}
	info := buildVersion()
	fmt.Fprintf(stdout, "directus-ws-broker %s\ncommit %s\n%s %s/%s\n", info.Version, info.Commit, info.GoVersion, runtime.GOOS, runtime.GOARCH)
	return nil
}
