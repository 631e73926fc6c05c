package stack

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// TestCleanShutdownLeaksNoGoroutines runs fetches with a session still open
// and fetches in flight, shuts the stack down, and checks that every goroutine
// it started is gone and the in-flight fetch still got its result.
func TestCleanShutdownLeaksNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := Start(ctx, EphemeralConfig(), zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	c := testutil.DialWS(t, st.OriginWS())
	for i := 0; i < 10; i++ {
		if _, res := c.Fetch("w"+itoa(i), st.TargetURL()+"/delay?ms=1", nil); res.Type != "result" {
			t.Fatalf("got %+v", res)
		}
	}
	// One slow fetch still in flight when shutdown starts: the drain waits for it.
	c.SendJSON(map[string]any{"type": "start-fetch", "id": "slow", "url": st.TargetURL() + "/delay?ms=300"})
	if f := c.Read(); f.Type != "enqueued" {
		t.Fatalf("got %+v, want enqueued", f)
	}
	got := make(chan testutil.Frame, 1)
	go func() {
		_ = c.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var f testutil.Frame
		_ = c.Conn.ReadJSON(&f)
		got <- f
	}()
	if err := st.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if f := <-got; f.Type != "result" || f.ID != "slow" {
		t.Fatalf("in-flight fetch ended with %+v, want its result before the close", f)
	}
	c.Conn.Close()
}
