package broker

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/internal/cpustat"
)

// keeperEnv is an embedded server storing in dir, with the pipeline's
// streams provisioned on file storage and a pull consumer on origin o1's
// jobs (what an executor reads).
type keeperEnv struct {
	ctx  context.Context
	dir  string
	js   jetstream.JetStream
	jobs jetstream.Consumer
}

func newKeeperEnv(tb testing.TB) *keeperEnv {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	tb.Cleanup(cancel)
	dir := tb.TempDir()
	js := provisionedServer(ctx, tb, dir, StreamsConfig{})
	jobs, err := EnsureJobsConsumer(ctx, js, Subjects{}, "o1")
	if err != nil {
		tb.Fatal(err)
	}
	return &keeperEnv{ctx: ctx, dir: dir, js: js, jobs: jobs}
}

// job stores one job of o1, receives it as an executor does and
// acknowledges it, which removes it from the work-queue stream.
func (e *keeperEnv) job(tb testing.TB) {
	if _, err := e.js.Publish(e.ctx, Subjects{}.Job("o1"), []byte("job")); err != nil {
		tb.Fatal(err)
	}
	msgs, err := e.jobs.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		tb.Fatal(err)
	}
	n := 0
	for m := range msgs.Messages() {
		if m.Subject() != (Subjects{}).Job("o1") {
			tb.Fatalf("the jobs consumer delivered %q", m.Subject())
		}
		if err := m.DoubleAck(e.ctx); err != nil {
			tb.Fatal(err)
		}
		n++
	}
	if n != 1 {
		tb.Fatalf("fetched %d jobs, want 1 (%v)", n, msgs.Error())
	}
}

// lastBlock is the index of the jobs stream's newest block file: the file
// store names them 1.blk, 2.blk, ... as it creates them.
func (e *keeperEnv) lastBlock(tb testing.TB) int {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(e.dir, "jetstream", "*", "streams", JobsStream, "msgs", "*.blk"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no block files of %s under %s (%v)", JobsStream, e.dir, err)
	}
	last := 0
	for _, f := range files {
		n, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".blk"))
		if err != nil {
			tb.Fatalf("block file %s: %v", f, err)
		}
		last = max(last, n)
	}
	return last
}

func (e *keeperEnv) keepers(tb testing.TB) uint64 {
	tb.Helper()
	st, err := e.js.Stream(e.ctx, JobsStream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := st.Info(e.ctx, jetstream.WithSubjectFilter(Subjects{}.JobsKeeper()))
	if err != nil {
		tb.Fatal(err)
	}
	return info.State.Subjects[Subjects{}.JobsKeeper()]
}

// TestKeeperStopsABlockFilePerJob checks what the keeper is for: jobs
// coming one at a time make the file store start a new block file per job
// (the stream empties each time), and with a keeper in the stream they all
// go into one block.
func TestKeeperStopsABlockFilePerJob(t *testing.T) {
	e := newKeeperEnv(t)
	const jobs = 20
	e.job(t)
	before := e.lastBlock(t)
	for i := 0; i < jobs; i++ {
		e.job(t)
	}
	if grew := e.lastBlock(t) - before; grew < jobs {
		t.Fatalf("without a keeper %d jobs one at a time made %d new block files, want one each: the file store no longer does that, and the keeper may be useless", jobs, grew)
	}
	if err := KeepJobsBlock(e.ctx, e.js, Subjects{}, time.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	before = e.lastBlock(t)
	for i := 0; i < jobs; i++ {
		e.job(t)
	}
	if grew := e.lastBlock(t) - before; grew != 0 {
		t.Fatalf("with a keeper %d jobs one at a time made %d new block files, want 0", jobs, grew)
	}
}

// TestKeeperOneAtATime checks that keepers published within one interval
// (by any number of executors) are one message, and that the next
// interval's keeper replaces every older one, also one an executor that
// died left behind.
func TestKeeperOneAtATime(t *testing.T) {
	e := newKeeperEnv(t)
	keeper := Subjects{}.JobsKeeper()
	last := func() uint64 {
		t.Helper()
		st, err := e.js.Stream(e.ctx, JobsStream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(e.ctx, keeper)
		if err != nil {
			t.Fatal(err)
		}
		return m.Sequence
	}
	at := time.Unix(1_000_000, 0)
	for i := 0; i < 3; i++ { // three executors, one interval
		if err := KeepJobsBlock(e.ctx, e.js, Subjects{}, at.Add(time.Duration(i)*time.Second), time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.keepers(t); n != 1 {
		t.Fatalf("%d keepers after three in one interval, want 1", n)
	}
	// Two keepers of executors that died (outside KeepJobsBlock's de-duplication),
	// and a job between them.
	for _, subj := range []string{keeper, Subjects{}.Job("o1"), keeper} {
		if _, err := e.js.Publish(e.ctx, subj, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := KeepJobsBlock(e.ctx, e.js, Subjects{}, at.Add(time.Minute), time.Minute); err != nil {
		t.Fatal(err)
	}
	if n := e.keepers(t); n != 1 {
		t.Fatalf("%d keepers after the next interval's, want 1", n)
	}
	newest := last()
	// The job is untouched.
	e.job(t)
	// A publish in an interval already kept changes nothing.
	if err := KeepJobsBlock(e.ctx, e.js, Subjects{}, at.Add(time.Minute+time.Second), time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, seq := e.keepers(t), last(); n != 1 || seq != newest {
		t.Fatalf("%d keepers, the last at %d, after a second publish in one interval; want 1 at %d", n, seq, newest)
	}
}

// TestKeeperIntoAFullStream checks that a full jobs stream is no error: it
// keeps its last block anyway.
func TestKeeperIntoAFullStream(t *testing.T) {
	e := newKeeperEnv(t)
	st, err := e.js.Stream(e.ctx, JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs = 1 // max_jobs 1, holding one job
	if _, err := e.js.UpdateStream(e.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.Publish(e.ctx, Subjects{}.Job("o1"), []byte("job")); err != nil {
		t.Fatal(err)
	}
	if err := KeepJobsBlock(e.ctx, e.js, Subjects{}, time.Now(), 0); err != nil {
		t.Fatalf("keeper into a full stream: %v, want nil", err)
	}
	if n := e.keepers(t); n != 0 {
		t.Fatalf("%d keepers in a full stream", n)
	}
}

// BenchmarkJobsRoundTrip stores, receives and acknowledges one job at a
// time through the embedded server's file store, with and without a keeper
// in the jobs stream. cpu-µs/op is this process's (server and client) CPU
// per job; ns/op its latency.
//
//	go test -run '^$' -bench JobsRoundTrip -benchtime 5000x -count 3 ./broker/
func BenchmarkJobsRoundTrip(b *testing.B) {
	for _, keeper := range []bool{false, true} {
		b.Run("keeper="+strconv.FormatBool(keeper), func(b *testing.B) {
			e := newKeeperEnv(b)
			if keeper {
				if err := KeepJobsBlock(e.ctx, e.js, Subjects{}, time.Now(), time.Hour); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; i < 100; i++ { // warm up
				e.job(b)
			}
			cpu0, _ := cpustat.Process()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e.job(b)
			}
			b.StopTimer()
			cpu1, _ := cpustat.Process()
			cpu := cpu1 - cpu0
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
