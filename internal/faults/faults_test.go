package faults

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// sendLoad sends n start-fetch frames round-robin over conns, keeping at most
// window fetches unfinished. at is called while waiting with the number of
// finished fetches; once it returns true the fault has happened. sendLoad
// returns the first send error.
// With stopAtFault, sending ends once the fault happened.
func sendLoad(l *testutil.Ledger, conns []*testutil.LedgerConn, n, window int, url string, stopAtFault bool, at func(finished int) bool) error {
	fired := false
	for i := 0; i < n; i++ {
		l.WaitFor(30*time.Second, func() bool {
			s := l.Summary()
			if !fired && at(s.Finished) {
				fired = true
			}
			return (fired && stopAtFault) || i-s.Finished-s.Refused < window
		})
		if fired && stopAtFault {
			return nil
		}
		c := conns[i%len(conns)]
		if err := c.StartFetch("f"+strconv.Itoa(i), url, ""); err != nil {
			return fmt.Errorf("send f%d: %w", i, err)
		}
	}
	if !fired {
		at(1 << 30)
	}
	return nil
}

func jobCount() int {
	if n, err := strconv.Atoi(os.Getenv("FAULT_JOBS")); err == nil && n > 0 {
		return n
	}
	return 2000
}

// TestExecutorKilledMidLoad runs two executor processes, kills one with
// SIGKILL while it has jobs in flight, and checks that every accepted fetch
// still ends with exactly one final frame.
func TestExecutorKilledMidLoad(t *testing.T) {
	needBinary(t)
	d := newDeployment(t)
	up := d.up(t, nil, "--executors", "0")
	e1 := d.executor(t, "e1")
	d.executor(t, "e2")

	l := testutil.NewLedger()
	conns := []*testutil.LedgerConn{testutil.DialLedger(t, d.wsURL(), l), testutil.DialLedger(t, d.wsURL(), l), testutil.DialLedger(t, d.wsURL(), l), testutil.DialLedger(t, d.wsURL(), l)}
	n := jobCount()
	killed := false
	start := time.Now()
	// A 100 ms target keeps both executors' 32 slots full (window 1000 ≫
	// 64 slots), so at the kill e1 holds jobs mid-fetch whose results are
	// not stored yet. With a 5 ms target the sender was the bottleneck: a
	// fast machine could kill e1 while it held nothing unstored, and no
	// job came back redelivered.
	err := sendLoad(l, conns, n, 1000, d.targetURL()+"/delay?ms=100", false, func(finished int) bool {
		if !killed && finished >= n/3 {
			e1.kill() // SIGKILL: in-flight jobs are never acked
			killed = true
		}
		return killed
	})
	if err != nil {
		t.Fatal(err)
	}
	if !l.WaitFor(90*time.Second, func() bool { s := l.Summary(); return s.Finished == s.Enqueued && s.Enqueued+s.Refused == n }) {
		t.Logf("unfinished: %d", len(l.Unfinished()))
	}
	elapsed := time.Since(start)
	if err := up.term(30 * time.Second); err != nil {
		t.Errorf("pipeline up exit: %v", err)
	}
	s := l.Summary()
	suppressed := -1
	if m := up.logLine("origin stopped"); m != nil {
		if v, ok := m["duplicates"].(float64); ok {
			suppressed = int(v)
		}
	}
	t.Logf("fault run: sent=%d enqueued=%d final=%d lost=%d client_duplicates=%d refused=%d redelivered_results=%d origin_duplicates_suppressed=%d outcomes=%v elapsed=%v",
		s.Sent, s.Enqueued, s.Finished, s.Lost, s.Duplicates, s.Refused, s.Redelivered, suppressed, s.Outcomes, elapsed.Round(time.Millisecond))
	if s.Sent != n || s.Enqueued+s.Refused != n {
		t.Errorf("sent %d, enqueued %d + refused %d, want %d", s.Sent, s.Enqueued, s.Refused, n)
	}
	if s.Lost != 0 || s.Duplicates != 0 {
		t.Errorf("lost %d, duplicate final frames %d: want 0 and 0", s.Lost, s.Duplicates)
	}
	if s.Redelivered == 0 {
		t.Errorf("no result came from a redelivered job: the kill did not hit in-flight work")
	}
}

// TestOriginRestartMidLoad kills the origin process (SIGKILL) mid-load and
// starts it again with the same id; the client reconnects and asks for what
// it is missing with get-result. No accepted fetch may be lost.
func TestOriginRestartMidLoad(t *testing.T) {
	needBinary(t)
	d := newDeployment(t)
	up := d.up(t, []string{"PIPELINE_ORIGIN_ENABLED=false"}, "--executors", "2")
	_ = up
	o := d.startOrigin(t)
	l := testutil.NewLedger()
	conns := []*testutil.LedgerConn{testutil.DialLedger(t, d.wsURL(), l), testutil.DialLedger(t, d.wsURL(), l)}
	const n = 600
	restarted := false
	_ = sendLoad(l, conns, n, 300, d.targetURL()+"/delay?ms=20", true, func(finished int) bool {
		if !restarted && finished >= n/3 {
			o.kill()
			restarted = true
		}
		return restarted
	})
	if !restarted {
		t.Fatal("origin was never killed")
	}
	// Frames sent to the dead origin after the kill were never accepted.
	o.kill()
	d.startOrigin(t)
	c := testutil.DialLedger(t, d.wsURL(), l)
	ok := l.WaitFor(60*time.Second, func() bool {
		missing := l.Unfinished()
		for id, job := range missing {
			_ = c.Send(map[string]any{"type": "get-result", "id": testutil.GetResultID(id), "job": job})
		}
		if len(missing) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		return len(missing) == 0
	})
	s := l.Summary()
	t.Logf("origin restart: sent=%d enqueued=%d final=%d lost=%d duplicates=%d outcomes=%v", s.Sent, s.Enqueued, s.Finished, s.Lost, s.Duplicates, s.Outcomes)
	if !ok || s.Lost != 0 {
		t.Errorf("%d accepted fetches never got a final frame", s.Lost)
	}
	if s.Duplicates != 0 {
		t.Errorf("%d duplicate final frames", s.Duplicates)
	}
	if s.Enqueued < n/3 {
		t.Errorf("only %d fetches accepted before the kill", s.Enqueued)
	}
}

// TestSIGTERMDrainsInFlightWork stops `pipeline up` with fetches in flight:
// every accepted fetch gets its result before the connection closes, and the
// process exits 0.
func TestSIGTERMDrainsInFlightWork(t *testing.T) {
	needBinary(t)
	d := newDeployment(t)
	up := d.up(t, nil, "--executors", "1")
	l := testutil.NewLedger()
	c := testutil.DialLedger(t, d.wsURL(), l)
	const n = 50
	for i := 0; i < n; i++ {
		if err := c.StartFetch("f"+strconv.Itoa(i), d.targetURL()+"/delay?ms=400", ""); err != nil {
			t.Fatal(err)
		}
	}
	l.WaitFor(10*time.Second, func() bool { return l.Summary().Enqueued == n })
	if err := up.term(30 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v (want status 0)", err)
	}
	<-c.Done() // the origin closed the connection after the drain
	s := l.Summary()
	if s.Enqueued != n || s.Finished != n || s.Lost != 0 || s.Outcomes["status_200"] != n {
		t.Fatalf("after drain: %+v, want %d results with status 200", s, n)
	}
}

// TestFullResultStoreThenKill9 is issue 13's result-store scenario with
// real processes: it pushes three times the results stream's size of 1 MiB
// results through `pipeline up` (streams.max_result_bytes 64 MiB), then
// 1,000 new fetches, and asks get-result for each of those 1,000 on a new
// connection: every one must answer its result. Then it kills the process
// (SIGKILL) with slow fetches in flight, starts it again on the same data
// dir, and asks get-result for every fetch that got `enqueued` and no final
// frame: every one must end.
func TestFullResultStoreThenKill9(t *testing.T) {
	needBinary(t)
	d := newDeployment(t)
	const storeBytes = 64 << 20
	env := []string{"PIPELINE_STREAMS_MAX_RESULT_BYTES=" + strconv.Itoa(storeBytes)}
	up := d.up(t, env, "--executors", "2")
	l := testutil.NewLedger()
	conns := []*testutil.LedgerConn{testutil.DialLedger(t, d.wsURL(), l), testutil.DialLedger(t, d.wsURL(), l)}
	phase := func(prefix string, n, window int, url string) {
		t.Helper()
		for i := 0; i < n; i++ {
			l.WaitFor(60*time.Second, func() bool { s := l.Summary(); return s.Sent-s.Finished-s.Refused < window })
			if err := conns[i%len(conns)].StartFetch(prefix+strconv.Itoa(i), url, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	fill := 3 * storeBytes >> 20
	began := time.Now()
	// 8 in flight: at most 4 MiB of results owed per connection, under its
	// 8 MiB send queue even while the client decodes a backlog.
	phase("big", fill, 8, d.targetURL()+"/bytes?n=1048576")
	if !l.WaitDone(120 * time.Second) {
		t.Fatalf("filling: %d fetches unfinished", l.Pending())
	}
	filled := time.Since(began)
	phase("new", 1000, 200, d.targetURL()+"/echo")
	if !l.WaitDone(120 * time.Second) {
		t.Fatalf("1,000 new fetches: %d unfinished", l.Pending())
	}
	// get-result for the 1,000, on a connection of its own.
	c := testutil.DialWS(t, d.wsURL())
	jobs := l.Jobs("new")
	for id, job := range jobs {
		c.SendJSON(map[string]any{"type": "get-result", "id": id, "job": job})
	}
	answered, other := 0, map[string]int{}
	for range jobs {
		f := c.Read()
		if f.Type == "result" && f.Status == 200 {
			answered++
		} else {
			other[f.Type+" "+f.Code]++
		}
	}
	// The fill's results are past the store's size: each one answers its
	// result while retained, or result_expired, never pending or unknown.
	bigAnswers := map[string]int{}
	for id, job := range l.Jobs("big") {
		c.SendJSON(map[string]any{"type": "get-result", "id": id, "job": job})
		f := c.Read()
		bigAnswers[f.Type+" "+f.Code]++
	}
	c.Conn.Close()

	// kill -9 with slow fetches in flight, restart, recover by get-result.
	const slow = 300
	killed := false
	for i := 0; i < slow; i++ {
		if err := conns[i%len(conns)].StartFetch("slow"+strconv.Itoa(i), d.targetURL()+"/delay?ms=500", ""); err != nil {
			t.Fatal(err)
		}
	}
	l.WaitFor(30*time.Second, func() bool { return len(l.Jobs("slow")) == slow })
	before := l.Summary()
	up.kill()
	killed = true
	up = d.up(t, env, "--executors", "2")
	rc := testutil.DialLedger(t, d.wsURL(), l)
	ok := l.WaitFor(120*time.Second, func() bool {
		missing := l.Unfinished()
		for id, job := range missing {
			_ = rc.Send(map[string]any{"type": "get-result", "id": testutil.GetResultID(id), "job": job})
		}
		if len(missing) > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		return len(missing) == 0
	})
	s := l.Summary()
	t.Logf("| results stream | 1 MiB results through it | get-result of 1,000 new fetches | fill's results asked again | slow fetches enqueued at the kill -9 | unfinished at the kill | ended after the restart | lost | duplicates |")
	t.Logf("| %d MiB | %d (%v) | %d of %d results%v | %v | %d | %d | %d | %d | %d |",
		storeBytes>>20, fill, filled.Round(time.Millisecond), answered, len(jobs), map[bool]string{true: "", false: fmt.Sprintf(", other %v", other)}[len(other) == 0],
		bigAnswers, slow, before.Enqueued-before.Finished, s.Finished-before.Finished, s.Lost, s.Duplicates)
	if answered != len(jobs) || len(jobs) != 1000 {
		t.Errorf("get-result answered %d of %d new fetches with their result (other answers %v)", answered, len(jobs), other)
	}
	for k, n := range bigAnswers {
		if k != "result " && k != "error result_expired" {
			t.Errorf("%d of the fill's fetches answered %q, want their result or result_expired", n, k)
		}
	}
	if !killed || before.Enqueued-before.Finished == 0 {
		t.Errorf("no fetch in flight at the kill (%+v)", before)
	}
	if !ok || s.Lost != 0 || s.Duplicates != 0 {
		t.Errorf("after the restart: %d enqueued fetches never ended, %d duplicate final frames", s.Lost, s.Duplicates)
	}
}
