package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRun runs the example as CI does: a pipeline in-process on free
// loopback ports, the fetches, the restart, and a clean exit.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, nil, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	for _, want := range []string{
		"keyed: 200 \"delayed 5 ms\\n\"; again: same job true, duplicate true\n",
		"delayed: 200 after >= 200ms: true\n",
		"cancel: canceled\n",
		"across a restart: 200 \"delayed 300 ms\\n\"\n",
		"scheduled across a restart: 200 \"delayed 1 ms\\n\"\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q lacks %q", out.String(), want)
		}
	}
}
