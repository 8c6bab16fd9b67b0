package main

import (
	"bytes"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionCommand(t *testing.T) {
	var stdout bytes.Buffer
	if err := run(t.Context(), []string{"version"}, func(string) string { return "" }, &stdout, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	info := buildVersion()
	out := stdout.String()
	for _, want := range []string{"directus-ws-broker " + info.Version + "\n", "commit " + info.Commit + "\n", runtime.Version()} {
		if !strings.Contains(out, want) {
			t.Errorf("version printed %q; want it to contain %q", out, want)
		}
	}
	if err := run(t.Context(), []string{"version", "extra"}, func(string) string { return "" }, &stdout, &bytes.Buffer{}); exitCode(err) != 2 {
		t.Errorf("version with an argument: %v, want a usage error", err)
	}
}

// TestBuildVersionLinkTime checks that the -ldflags values win.
func TestBuildVersionLinkTime(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	version, commit = "v1.2.3", "0123456789abcdef0123456789abcdef01234567"
	if got := buildVersion(); got.Version != "v1.2.3" || got.Commit != commit || got.GoVersion != runtime.Version() {
		t.Errorf("buildVersion() = %+v", got)
	}
}

func TestVCSCommit(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	setting := func(kv ...string) *debug.BuildInfo {
		bi := &debug.BuildInfo{}
		for i := 0; i < len(kv); i += 2 {
			bi.Settings = append(bi.Settings, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return bi
	}
	for _, tc := range []struct {
		bi          *debug.BuildInfo
		commit, ver string
	}{
		{setting("vcs.revision", rev, "vcs.modified", "false"), rev, "0123456789ab"},
		{setting("vcs.revision", rev, "vcs.modified", "true"), rev + "-dirty", "0123456789ab-dirty"},
		{setting("vcs", "git"), "", ""},
	} {
		got := vcsCommit(tc.bi)
		if got != tc.commit {
			t.Errorf("vcsCommit(%v) = %q, want %q", tc.bi.Settings, got, tc.commit)
		}
		if got != "" && shortCommit(got) != tc.ver {
			t.Errorf("shortCommit(%q) = %q, want %q", got, shortCommit(got), tc.ver)
		}
	}
}
