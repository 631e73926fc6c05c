package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestRunOnce runs the example as CI does: an embedded NATS server and the
// HTTP side on free loopback ports, one call over each, then a clean exit.
func TestRunOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []string{"-once", "-listen", "127.0.0.1:0"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{"serving pipeline.rpc.reverse and http://127.0.0.1:", "nats: desserts\n", "http: 200 reward\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q lacks %q", out.String(), want)
		}
	}
}

func TestReverseRejectsInvalidUTF8(t *testing.T) {
	if _, err := reverse(context.Background(), []byte{0xff}); err == nil {
		t.Fatal("invalid UTF-8: want an error")
	}
	if got, err := reverse(context.Background(), []byte("ǆé!")); err != nil || string(got) != "!éǆ" {
		t.Fatalf("got %q %v", got, err)
	}
}
