package runtime

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startService runs a runtime Service on nc, shut down by tb.Cleanup.
func startService(tb testing.TB, nc *nats.Conn, cfg Config) *Service {
	tb.Helper()
	s, err := New(nc, cfg)
	if err != nil {
		tb.Fatalf("new service: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		tb.Fatalf("start service: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			tb.Errorf("shut down service: %v", err)
		}
	})
	return s
}

// payload builds a request body of about size bytes for fn (see
// testutil.RPCPayload).
func payload(fn string, size int) []byte { return testutil.RPCPayload(fn, size) }

// checkReply verifies out as fn's reply to body (see testutil.CheckRPCReply).
func checkReply(tb testing.TB, fn string, body, out []byte) {
	tb.Helper()
	testutil.CheckRPCReply(tb, fn, body, out)
}

// validCase is a request that must succeed.
type validCase struct {
	name, fn string
	body     []byte
}

// validCases are the well-formed requests every path is checked with.
func validCases() []validCase {
	var out []validCase
	for _, c := range testutil.RPCValidCases() {
		out = append(out, validCase{c.Name, c.Fn, c.Body})
	}
	return out
}

// badCase is a request that must fail with code.
type badCase struct {
	name, fn string
	body     []byte
	code     int
	msg      string // a substring of the error message
}

// badCases are requests every path must reject with a typed error. The
// limits they assume are testLimits.
func badCases() []badCase {
	var out []badCase
	for _, c := range testutil.RPCBadCases() {
		out = append(out, badCase{c.Name, c.Fn, c.Body, c.Code, c.Msg})
	}
	return out
}

// testLimits are small enough to test cheaply.
var testLimits = Limits{MaxPayload: testutil.RPCTestMaxPayload, MaxRounds: testutil.RPCTestMaxRounds}

// testRegistry is a registry with the built-ins under testLimits.
func testRegistry() *Registry { return NewRegistry(testLimits) }
