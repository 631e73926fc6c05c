package client_test

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeInSyncWithExample holds the README's "Use it from Go" sample to
// the package Example: with the URLs swapped for the Example's variables,
// every code line of the sample is a line of example_test.go, so the sample
// compiles and does what the Example's Output shows.
func TestReadmeInSyncWithExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(readme), "## Use it from Go")
	if !ok {
		t.Fatal(`README has no "## Use it from Go" section`)
	}
	_, code, ok := strings.Cut(sec, "```go\n")
	if ok {
		code, _, ok = strings.Cut(code, "```")
	}
	if !ok {
		t.Fatal("the section has no go code block")
	}
	have := map[string]bool{}
	for _, l := range strings.Split(string(example), "\n") {
		have[codeLine(l)] = true
	}
	r := strings.NewReplacer(`"ws://127.0.0.1:8080/ws"`, "originWS", `"http://127.0.0.1:8090/delay?ms=5"`, `target + "/delay?ms=5"`)
	for _, l := range strings.Split(code, "\n") {
		if l = codeLine(r.Replace(l)); l != "" && !have[l] {
			t.Errorf("README line %q is not in the Example", l)
		}
	}
}

// codeLine strips indentation and a trailing // comment.
func codeLine(l string) string {
	if i := strings.Index(l, "//"); i >= 0 && !strings.Contains(l[:i], `"`) {
		l = l[:i]
	} else if i := strings.LastIndex(l, " // "); i >= 0 {
		l = l[:i]
	}
	return strings.TrimSpace(l)
}
