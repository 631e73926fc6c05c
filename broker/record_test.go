package broker

import (
	"testing"
	"time"
)

// TestRecordsFirstWinsPerJob: a job's first record stays; a second one of
// the same job is refused (and StoreAfterRefusal stores nothing), on
// either lane (small or bulk) whichever lane the first is on, while a
// key's later job (same id, another request) replaces an earlier job's
// record, also across lanes.
func TestRecordsFirstWinsPerJob(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{})
	nc := e.js.Conn()
	s := Subjects{}
	store := func(res *Result, bulk bool) (bool, error) {
		data, err := res.Encode()
		if err != nil {
			t.Fatal(err)
		}
		subj, record := s.ResultOf("o1", res.JobID), s.RecordOf("o1", res.JobID)
		if bulk {
			subj = s.BulkResultOf("o1", res.JobID)
		}
		_, err = e.js.Publish(e.ctx, subj, data, FirstRecord(record))
		if err == nil {
			return true, nil
		}
		if !IsRecordTaken(err) {
			t.Fatalf("store %s: %v", res.JobID, err)
		}
		return StoreAfterRefusal(e.ctx, nc, e.js, "$JS.API", subj, record, res, data)
	}
	get := func(job string) *Result {
		rec, err := GetRecord(e.ctx, nc, "$JS.API", s.RecordOf("o1", job))
		if err != nil {
			t.Fatal(err)
		}
		if rec == nil {
			return nil
		}
		return rec.Result
	}
	if get("nojob") != nil {
		t.Fatal("a record for a job never stored")
	}

	// A server-named id: the first record wins, whatever follows.
	first := &Result{JobID: "abc123", Origin: "o1", Status: 200, Body: []byte("first")}
	if ok, err := store(first, false); !ok || err != nil {
		t.Fatalf("first record: %v %v", ok, err)
	}
	again := &Result{JobID: "abc123", Origin: "o1", Status: 200, Body: []byte("second")}
	for _, bulk := range []bool{false, true} {
		if ok, err := store(again, bulk); ok || err != nil {
			t.Fatalf("second record of one job (bulk lane %v): stored %v, err %v; want refused", bulk, ok, err)
		}
	}
	// The other way round: a first record on the bulk lane.
	big := &Result{JobID: "def456", Origin: "o1", Status: 200, Body: []byte("big")}
	if ok, err := store(big, true); !ok || err != nil {
		t.Fatalf("first record on the bulk lane: %v %v", ok, err)
	}
	if ok, err := store(&Result{JobID: "def456", Origin: "o1", Error: &Error{Code: CodeCanceled}}, false); ok || err != nil {
		t.Fatalf("a cancel after a bulk record: stored %v, err %v; want refused", ok, err)
	}
	if r := get("def456"); r == nil || string(r.Body) != "big" {
		t.Fatalf("record %+v, want the bulk one", r)
	}
	if r := get("abc123"); r == nil || string(r.Body) != "first" {
		t.Fatalf("record %+v, want the first", r)
	}

	// A key's id: the same request's second record is refused; a later
	// request under the key (a new job once the key window passed) replaces it.
	job := KeyJobID("order-1")
	t1 := time.Now().Add(-time.Hour).UnixNano()
	gen1 := &Result{JobID: job, Origin: "o1", ReceivedAt: t1, Status: 200, Body: []byte("gen1")}
	if ok, err := store(gen1, false); !ok || err != nil {
		t.Fatalf("gen1: %v %v", ok, err)
	}
	if ok, err := store(&Result{JobID: job, Origin: "o1", ReceivedAt: t1, Body: []byte("gen1 again")}, true); ok || err != nil {
		t.Fatalf("gen1 again: stored %v, err %v; want refused", ok, err)
	}
	gen2 := &Result{JobID: job, Origin: "o1", ReceivedAt: time.Now().UnixNano(), Status: 200, Body: []byte("gen2")}
	if ok, err := store(gen2, true); !ok || err != nil {
		t.Fatalf("gen2: stored %v, err %v; want it to replace gen1", ok, err)
	}
	if r := get(job); r == nil || string(r.Body) != "gen2" {
		t.Fatalf("record %+v, want gen2", r)
	}
}
