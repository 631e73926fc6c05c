package testutil

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that collects Errorf calls instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestLedgerSummaryAndCheck(t *testing.T) {
	l := NewLedger()
	for _, id := range []string{"ok", "err", "refused", "lost", "dup", "late"} {
		l.MarkSent(id, "")
	}
	l.MarkSent("body", "want")
	frames := []Frame{
		{Type: "hello", Origin: "o1"},
		{Type: "enqueued", ID: "ok", Job: "J1"},
		{Type: "result", ID: "ok", Job: "J1", Status: 200, Attempt: 2},
		{Type: "enqueued", ID: "err", Job: "J2"},
		{Type: "error", ID: "err", Job: "J2", Code: "timeout"},
		{Type: "error", ID: "refused", Code: "queue_full"},
		{Type: "enqueued", ID: "lost", Job: "J4"},
		{Type: "enqueued", ID: "dup", Job: "J5"},
		{Type: "result", ID: "dup", Job: "J5", Status: 200, Attempt: 1},
		{Type: "result", ID: "dup", Job: "J5", Status: 200, Attempt: 1},
		{Type: "enqueued", ID: "late", Job: "J6"},
		{Type: "error", ID: GetResultID("late"), Job: "J6", Code: "bad_request"}, // not finished yet: dropped
		{Type: "error", ID: GetResultID("late"), Job: "J6", Code: "not_found"},   // restarted origin: dropped
		{Type: "pending", ID: GetResultID("late"), Job: "J6"},                    // running: dropped
		{Type: "result", ID: GetResultID("late"), Job: "J6", Status: 201, Attempt: 1},
		{Type: "result", ID: GetResultID("late"), Job: "J6", Status: 201, Attempt: 1}, // asked twice: not a duplicate
		{Type: "enqueued", ID: "body", Job: "J7"},
		{Type: "result", ID: "body", Job: "J7", Status: 200, Body: "other"},
		{Type: "result", ID: "never-sent", Job: "J8", Status: 200},
	}
	for _, f := range frames {
		l.Record(f)
	}

	s := l.Summary()
	want := Summary{Sent: 7, Enqueued: 6, Finished: 5, Lost: 1, Duplicates: 1, Results: 4, ErrorsAfterEnqueued: 1, Refused: 1, Redelivered: 1}
	got := s
	got.Outcomes = nil
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) {
		t.Errorf("summary %+v, want %+v", got, want)
	}
	if s.Outcomes["status_200"] != 4 || s.Outcomes["status_201"] != 1 || s.Outcomes["timeout"] != 1 || s.Outcomes["queue_full"] != 1 {
		t.Errorf("outcomes %v, want status_200:4 status_201:1 timeout:1 queue_full:1", s.Outcomes)
	}
	if p := l.Pending(); p != 1 {
		t.Errorf("pending %d, want 1 (lost)", p)
	}
	if u := l.Unfinished(); len(u) != 1 || u["lost"] != "J4" {
		t.Errorf("unfinished %v, want lost → J4", u)
	}

	r := &recorder{TB: t}
	l.Check(r)
	joined := strings.Join(r.errs, "\n")
	for _, want := range []string{"never-sent", "fetch dup", "fetch lost", `body "other", want 200 "want"`} {
		if !strings.Contains(joined, want) {
			t.Errorf("Check errors do not mention %q:\n%s", want, joined)
		}
	}
	if len(r.errs) != 4 {
		t.Errorf("Check reported %d errors, want 4:\n%s", len(r.errs), joined)
	}
}

func TestLedgerWaitForWakesOnFrames(t *testing.T) {
	l := NewLedger()
	l.MarkSent("a", "")
	go func() {
		l.Record(Frame{Type: "enqueued", ID: "a", Job: "J"})
		l.Record(Frame{Type: "result", ID: "a", Job: "J", Status: 200})
	}()
	if !l.WaitDone(10 * time.Second) {
		t.Fatalf("WaitDone: %d pending, want 0", l.Pending())
	}
	if l.WaitFor(30*time.Millisecond, func() bool { return false }) {
		t.Fatal("WaitFor reported a condition that never held")
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports := FreePorts(t, 5)
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Fatalf("ports %v: want 5 distinct positive ports", ports)
		}
		seen[p] = true
	}
}
