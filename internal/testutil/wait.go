package testutil

import (
	"fmt"
	"testing"
	"time"
)

// pollEvery is how often Eventually and WaitFor check their condition.
const pollEvery = 10 * time.Millisecond

// WaitFor polls cond every few milliseconds until it returns true or timeout
// passes, and reports whether it held. It never sleeps longer than needed, so
// a test waits for a state, not for a guessed duration.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return cond()
		}
		time.Sleep(pollEvery)
	}
}

// Eventually fails the test (t.Fatalf, so call it from the test goroutine)
// unless cond returns true within timeout. msgAndArgs, if given, is a format
// string and its arguments describing what was awaited.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	if WaitFor(timeout, cond) {
		return
	}
	what := "condition"
	if len(msgAndArgs) > 0 {
		if f, ok := msgAndArgs[0].(string); ok {
			what = fmt.Sprintf(f, msgAndArgs[1:]...)
		}
	}
	t.Fatalf("%s: not true within %v", what, timeout)
}
