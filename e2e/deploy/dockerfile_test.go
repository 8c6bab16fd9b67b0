//go:build linux

package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	op, arg string
}

// dockerfile parses the Dockerfile's instructions (comments dropped).
func dockerfile(t testing.TB) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(repoFile(t, "Dockerfile"), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cont, ok := strings.CutSuffix(trimmed, "\\"); ok {
			cur.WriteString(cont + " ")
			continue
		}
		cur.WriteString(trimmed)
		op, arg, _ := strings.Cut(cur.String(), " ")
		out = append(out, instruction{strings.ToUpper(op), strings.TrimSpace(arg)})
		cur.Reset()
	}
	return out
}

// runBuildStage runs the Dockerfile's "build" stage on this machine, in
// place of the golang image that cannot be pulled here (this machine is
// Debian 12 with the same Go, as golang:GO_VERSION-bookworm is): its ARGs
// with args overriding them, its RUN commands as written, with /out moved
// into a temporary directory, which it returns. COPY and WORKDIR are
// implied: the commands run in the checkout.
func runBuildStage(t testing.TB, args map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	vars := map[string]string{}
	env := os.Environ()
	inStage := false
	expand := regexp.MustCompile(`\$\{(\w+)\}`)
	for _, in := range dockerfile(t) {
		switch {
		case in.op == "FROM":
			if inStage {
				return dir
			}
			inStage = strings.HasSuffix(in.arg, " AS build")
		case in.op == "ARG":
			k, v, _ := strings.Cut(in.arg, "=")
			if a, ok := args[k]; ok {
				v = a
			}
			vars[k] = v
			if inStage {
				env = append(env, k+"="+v)
			}
		case !inStage:
		case in.op == "COPY" || in.op == "WORKDIR":
		case in.op == "RUN":
			cmd := expand.ReplaceAllStringFunc(in.arg, func(m string) string { return vars[m[2:len(m)-1]] })
			cmd = strings.ReplaceAll(cmd, "/out", filepath.Join(dir, "out"))
			if out, err := execIn(t, root, env, "bash", "-ec", cmd); err != nil {
				t.Fatalf("Dockerfile build stage: RUN %s: %v\n%s", in.arg, err, out)
			}
		default:
			t.Fatalf("Dockerfile build stage: %s is not handled by runBuildStage", in.op)
		}
	}
	t.Fatal(`Dockerfile: no stage after the one "AS build"`)
	return ""
}

// TestDockerfileGoVersion checks that the image is built with the Go of
// go.mod.
func TestDockerfileGoVersion(t *testing.T) {
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(repoFile(t, "go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	var found bool
	for _, in := range dockerfile(t) {
		if v, ok := strings.CutPrefix(in.arg, "GO_VERSION="); in.op == "ARG" && ok {
			found = true
			if v != m[1] {
				t.Errorf("Dockerfile GO_VERSION=%s, go.mod says go %s", v, m[1])
			}
		}
	}
	if !found {
		t.Error("Dockerfile: no ARG GO_VERSION")
	}
}
