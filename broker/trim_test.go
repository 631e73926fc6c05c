package broker

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// trimEnv is an embedded server with provisioned streams, for the
// TrimResults tests.
type trimEnv struct {
	t   *testing.T
	ctx context.Context
	js  jetstream.JetStream
	cfg StreamsConfig
}

func newTrimEnv(t *testing.T, cfg StreamsConfig) *trimEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	js := provisionedServer(ctx, t, t.TempDir(), cfg)
	return &trimEnv{t: t, ctx: ctx, js: js, cfg: cfg}
}

// provisionedServer starts an embedded server storing in dir, stopped at
// the end of tb, and returns a JetStream context on a connection to it,
// with the pipeline's streams provisioned with cfg.
func provisionedServer(ctx context.Context, tb testing.TB, dir string, cfg StreamsConfig) jetstream.JetStream {
	tb.Helper()
	srv, err := NewServer(ServerConfig{Port: -1, MonitorPort: -2, StoreDir: dir, Logger: zerolog.Nop()})
	if err != nil {
		tb.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	if err := Provision(ctx, js, cfg); err != nil {
		tb.Fatal(err)
	}
	return js
}

// consumer creates origin's results consumer.
func (e *trimEnv) consumer(origin string) jetstream.Consumer {
	e.t.Helper()
	c, err := e.js.CreateOrUpdateConsumer(e.ctx, ResultsStream, OriginConsumerConfig(e.cfg.Subjects, origin, 1, 0))
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// bulkConsumer creates origin's bulk-lane consumer.
func (e *trimEnv) bulkConsumer(origin string) jetstream.Consumer {
	e.t.Helper()
	c, err := e.js.CreateOrUpdateConsumer(e.ctx, ResultsStream, OriginConsumerConfigs(e.cfg.Subjects, origin, 1, 0)[1])
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// publishBulk stores results of jobs of origin on the bulk lane.
func (e *trimEnv) publishBulk(origin string, size int, jobs ...string) {
	e.t.Helper()
	body := bytes.Repeat([]byte("b"), size)
	for _, j := range jobs {
		if _, err := e.js.Publish(e.ctx, e.cfg.Subjects.BulkResultOf(origin, j), body, FirstRecord(e.cfg.Subjects.RecordOf(origin, j))); err != nil {
			e.t.Fatalf("publish bulk %s/%s: %v", origin, j, err)
		}
	}
}

// publish stores the results of jobs of origin, each size bytes.
func (e *trimEnv) publish(origin string, size int, jobs ...string) {
	e.t.Helper()
	body := bytes.Repeat([]byte("r"), size)
	for _, j := range jobs {
		if _, err := e.js.Publish(e.ctx, e.cfg.Subjects.ResultOf(origin, j), body, jetstream.WithMsgID(origin+"/"+j)); err != nil {
			e.t.Fatalf("publish %s/%s: %v", origin, j, err)
		}
	}
}

// read delivers the next n results of c, acknowledging (settled with the
// server) the first ack of them.
func (e *trimEnv) read(c jetstream.Consumer, n, ack int) {
	e.t.Helper()
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		e.t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if got < ack {
			if err := m.DoubleAck(e.ctx); err != nil {
				e.t.Fatal(err)
			}
		}
		got++
	}
	if err := batch.Error(); err != nil {
		e.t.Fatal(err)
	}
	if got != n {
		e.t.Fatalf("fetched %d results, want %d", got, n)
	}
}

// pending waits until c reports n results pending: the server counts new
// results a moment after storing them, and TrimStats.Lagging follows its
// count.
func (e *trimEnv) pending(c jetstream.Consumer, n uint64) {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := c.Info(e.ctx)
		if err != nil {
			e.t.Fatal(err)
		}
		if info.NumPending == n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("consumer %s: %d pending, want %d", info.Name, info.NumPending, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// trim runs TrimResults and checks how many results it dropped.
func (e *trimEnv) trim(now time.Time, wantPurged uint64) TrimStats {
	e.t.Helper()
	st, err := TrimResults(e.ctx, e.js, e.cfg, now)
	if err != nil {
		e.t.Fatal(err)
	}
	if st.Purged != wantPurged {
		e.t.Fatalf("trim purged %d results, want %d (stats %+v)", st.Purged, wantPurged, st)
	}
	return st
}

// left checks the results stored: want are "origin/job" pairs, or
// "origin/bulk:job" for the bulk lane.
func (e *trimEnv) left(want ...string) {
	e.t.Helper()
	st, err := e.js.Stream(e.ctx, ResultsStream)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := st.Info(e.ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		e.t.Fatal(err)
	}
	var got []string
	for s := range info.State.Subjects {
		got = append(got, s)
	}
	var exp []string
	for _, w := range want {
		o, j, _ := strings.Cut(w, "/")
		if b, ok := strings.CutPrefix(j, "bulk:"); ok {
			exp = append(exp, e.cfg.Subjects.BulkResultOf(o, b))
		} else {
			exp = append(exp, e.cfg.Subjects.ResultOf(o, j))
		}
	}
	sort.Strings(got)
	sort.Strings(exp)
	if fmt.Sprint(got) != fmt.Sprint(exp) {
		e.t.Fatalf("results left: %v, want %v", got, exp)
	}
}

func jobs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

func TestTrimDropsAcknowledgedOldResults(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{})
	c := e.consumer("o1")
	e.publish("o1", 100, jobs("j", 5)...)
	// A result on the plain subject is stored for job "_" and trimmed alike.
	if _, err := e.js.Publish(e.ctx, e.cfg.Subjects.Result("o1"), []byte("legacy")); err != nil {
		t.Fatal(err)
	}
	e.read(c, 3, 3)

	// Within the retention: everything stays.
	e.trim(time.Now(), 0)
	e.left("o1/j0", "o1/j1", "o1/j2", "o1/j3", "o1/j4", "o1/_")

	st := e.trim(time.Now().Add(time.Hour), 3)
	if st.OverBytes {
		t.Fatal("over bytes, want not")
	}
	e.left("o1/j3", "o1/j4", "o1/_")

	e.read(c, 3, 3)
	e.trim(time.Now().Add(time.Hour), 3)
	e.left()
}

// TestTrimFollowsEachLane: an origin's two lanes are trimmed by their own
// consumers: an unacknowledged result on the bulk lane is kept, however
// old, without keeping the small lane's acknowledged results, and the other
// way round.
func TestTrimFollowsEachLane(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{})
	small, bulk := e.consumer("o1"), e.bulkConsumer("o1")
	e.publishBulk("o1", 1000, "b0", "b1")
	e.publish("o1", 100, "j0", "j1")
	e.publishBulk("o1", 1000, "b2")
	e.read(small, 2, 2) // the small lane is done
	e.read(bulk, 1, 1)  // the bulk lane lags: b1 delivered, not acknowledged, b2 waiting
	e.read(bulk, 1, 0)
	e.pending(bulk, 1)
	st := e.trim(time.Now().Add(1000*time.Hour), 3) // b0, j0, j1
	if len(st.Lagging) != 1 || st.Lagging[0] != "o1" {
		t.Fatalf("lagging %v, want o1 once", st.Lagging)
	}
	e.left("o1/bulk:b1", "o1/bulk:b2")

	// Another origin whose small lane lags and bulk lane is done.
	small2, bulk2 := e.consumer("o2"), e.bulkConsumer("o2")
	e.publish("o2", 100, "j0")
	e.publishBulk("o2", 1000, "b0", "b1")
	e.read(small2, 1, 0)
	e.read(bulk2, 2, 2)
	e.trim(time.Now().Add(1000*time.Hour), 2) // o2's b0, b1
	e.left("o1/bulk:b1", "o1/bulk:b2", "o2/j0")
}

func TestTrimKeepsUnacknowledgedResultsHoweverOld(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{})
	c := e.consumer("o1")
	e.publish("o1", 100, jobs("j", 5)...)
	// j0 acknowledged, j1 delivered and not acknowledged, j2.. not delivered.
	e.read(c, 2, 1)
	e.trim(time.Now().Add(1000*time.Hour), 1)
	e.left("o1/j1", "o1/j2", "o1/j3", "o1/j4")

	// An acknowledgement above the ack floor (j2 acked, j1 still not)
	// keeps j2 too: only what is below the floor is surely done.
	e.read(c, 1, 1)
	e.trim(time.Now().Add(1000*time.Hour), 0)
	e.left("o1/j1", "o1/j2", "o1/j3", "o1/j4")
}

func TestTrimKeepsRecentAcknowledgedResults(t *testing.T) {
	const retention = 10 * time.Minute
	e := newTrimEnv(t, StreamsConfig{FinishedTTL: retention})
	c := e.consumer("o1")
	before := time.Now()
	e.publish("o1", 100, jobs("old", 3)...)
	mid := time.Now()
	e.publish("o1", 100, jobs("new", 3)...)
	e.read(c, 6, 6)

	e.trim(time.Now(), 0)
	e.trim(before.Add(retention), 0)
	// At mid+retention the first batch is older than the retention, the
	// second not.
	e.trim(mid.Add(retention), 3)
	e.left("o1/new0", "o1/new1", "o1/new2")
}

func TestTrimOverBytesDropsAcknowledgedButNeverUnacknowledged(t *testing.T) {
	cfg := StreamsConfig{MaxResultBytes: 64 << 10, FinishedMaxBytes: 16 << 10}
	if got := TrimThreshold(cfg); got != 16<<10 {
		t.Fatalf("threshold %d, want %d", got, 16<<10)
	}
	if got := TrimThreshold(StreamsConfig{MaxResultBytes: 64 << 10}); got != 48<<10 {
		t.Fatalf("threshold %d, want three quarters of max_result_bytes", got)
	}
	e := newTrimEnv(t, cfg)
	c := e.consumer("o1")
	e.publish("o1", 1<<10, jobs("j", 20)...) // ~20 KiB: over the threshold
	e.read(c, 12, 10)                        // j10, j11 delivered, not acked

	st := e.trim(time.Now(), 10)
	if !st.OverBytes {
		t.Fatal("not over bytes, want over")
	}
	e.left(append([]string{"o1/j10", "o1/j11"}, prefixed("o1/", jobs("j", 20)[12:])...)...)

	// Below the threshold again: recent acknowledged results stay.
	e.read(c, 8, 8)
	e.trim(time.Now(), 0)
}

// TestTrimFollowsTheStreamsOwnSize: the trimmer's threshold follows the
// stream's actual MaxBytes when the caller's settings are larger (another
// role provisioned it smaller last): otherwise a full stream of read
// results would never be trimmed and executors would hold every new result
// until the retention ran out.
func TestTrimFollowsTheStreamsOwnSize(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{MaxResultBytes: 64 << 10})
	e.cfg = StreamsConfig{MaxResultBytes: 1 << 30, FinishedMaxBytes: 1 << 30} // the executor's own view
	c := e.consumer("o1")
	e.publish("o1", 1<<10, jobs("j", 50)...) // over 3/4 of a 64 KiB stream
	e.read(c, 50, 50)
	if st := e.trim(time.Now(), 50); !st.OverBytes {
		t.Fatalf("stats %+v, want over bytes (three quarters of the stream's own 64 KiB)", st)
	}
}

func prefixed(p string, s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = p + v
	}
	return out
}

func TestTrimLaggingOriginDoesNotKeepOthersResults(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{})
	c1, c2, c3 := e.consumer("o1"), e.consumer("o2"), e.consumer("o3")
	for i := 0; i < 4; i++ {
		j := fmt.Sprint("j", i)
		e.publish("o2", 100, j) // o2 is down: reads nothing
		e.publish("o1", 100, j)
		e.publish("o3", 100, j)
	}
	e.read(c1, 4, 4)
	e.read(c3, 2, 2)
	e.pending(c2, 4)
	e.pending(c3, 2)

	st := e.trim(time.Now().Add(time.Hour), 6)
	if fmt.Sprint(sortedCopy(st.Lagging)) != "[o2 o3]" {
		t.Fatalf("lagging %v, want [o2 o3]", st.Lagging)
	}
	e.left("o2/j0", "o2/j1", "o2/j2", "o2/j3", "o3/j2", "o3/j3")

	// o2 comes back and reads everything: all its results go.
	e.read(e.consumer("o2"), 4, 4)
	e.trim(time.Now().Add(time.Hour), 4)
	e.left("o3/j2", "o3/j3")
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func TestTrimNegativeRetentionDropsAcknowledgedAtOnce(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{FinishedTTL: -1})
	c := e.consumer("o1")
	e.publish("o1", 100, jobs("j", 3)...)
	e.read(c, 3, 2)
	e.trim(time.Now(), 2)
	e.left("o1/j2")
}

func TestTrimResultsWithoutConsumerAreTrimmedByAge(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{})
	e.publish("gone", 100, jobs("j", 2)...)
	e.trim(time.Now(), 0)
	e.trim(time.Now().Add(time.Hour), 2)
	e.left()
}

func TestTrimTwiceIsHarmless(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{})
	c1, c2 := e.consumer("o1"), e.consumer("o2")
	e.publish("o1", 100, jobs("j", 4)...)
	e.publish("o2", 100, jobs("j", 4)...)
	e.read(c1, 4, 4)
	e.read(c2, 4, 2)

	// Many processes trim at once: each result goes once.
	later := time.Now().Add(time.Hour)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total uint64
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := TrimResults(e.ctx, e.js, e.cfg, later)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			total += st.Purged
			mu.Unlock()
		}()
	}
	wg.Wait()
	if total != 6 {
		t.Fatalf("concurrent trims purged %d, want 6", total)
	}
	e.trim(later, 0)
	e.trim(later, 0)
	e.left("o2/j2", "o2/j3")
}

func TestTrimEmptyStream(t *testing.T) {
	e := newTrimEnv(t, StreamsConfig{})
	e.consumer("o1")
	e.trim(time.Now().Add(time.Hour), 0)
}

func TestTrimInterval(t *testing.T) {
	for _, tc := range []struct {
		ttl, want time.Duration
	}{
		{0, 10 * time.Second},
		{time.Hour, 10 * time.Second},
		{20 * time.Second, 5 * time.Second},
		{time.Second, time.Second},
		{-1, time.Second},
	} {
		if got := TrimInterval(StreamsConfig{FinishedTTL: tc.ttl}); got != tc.want {
			t.Errorf("TrimInterval(%s) = %s, want %s", tc.ttl, got, tc.want)
		}
	}
}

// TestTrimAsExecutorUnderAuth: with per-role permissions an executor may
// trim (ExecutorPermissions grants what TrimResults needs), and the origin
// acknowledges through its import as in production.
func TestTrimAsExecutorUnderAuth(t *testing.T) {
	auth := testAuth()
	srv := startAuthServer(t, auth, nil)
	provisionAsAdmin(t, srv, auth)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s := Subjects{}

	ex := connectAs(t, srv, auth, RoleExecutor, "")
	exjs := newJS(t, ex)
	var mid time.Time
	for _, j := range []string{"j0", "j1", "j2"} {
		if j == "j1" {
			mid = time.Now()
		}
		if _, err := exjs.Publish(ctx, s.ResultOf("o1", j), []byte("r")); err != nil {
			t.Fatalf("executor publishes result %s: %v", j, err)
		}
	}
	o1 := connectAs(t, srv, auth, RoleOrigin, "o1")
	cons, err := pipelineJS(t, o1).Consumer(ctx, ResultsStream, OriginConsumer("o1"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}

	cfg := StreamsConfig{Storage: MemoryStorage}
	retention := DefaultStreamsConfig().FinishedTTL
	// Within the retention; then j0 past it (the direct get by time finds
	// j1); then everything past it, j2 unacknowledged.
	for _, tc := range []struct {
		now  time.Time
		want uint64
	}{{time.Now(), 0}, {mid.Add(retention), 1}, {time.Now().Add(time.Hour), 1}} {
		st, err := TrimResults(ctx, exjs, cfg, tc.now)
		if err != nil {
			t.Fatalf("executor trims: %v", err)
		}
		if st.Purged != tc.want {
			t.Fatalf("executor trim purged %d, want %d", st.Purged, tc.want)
		}
	}
	noViolation(t, ex, "executor")
}

// TestTrimRetentionCutoffOverInteriorDeletes: the retention cutoff is found
// even when results around it were already dropped (interior deletes left
// by an origin's filtered purge).
func TestTrimRetentionCutoffOverInteriorDeletes(t *testing.T) {
	const retention = 10 * time.Minute
	e := newTrimEnv(t, StreamsConfig{FinishedTTL: retention})
	c1, c2 := e.consumer("o1"), e.consumer("o2")
	e.publish("o2", 100, "a0")
	e.publish("o1", 100, "a0")
	mid := time.Now()
	e.publish("o1", 100, "b0", "b1")
	e.publish("o2", 100, "b0")
	e.read(c1, 3, 3)
	// No retention: o1's results go at once, o2 (lagging) keeps its own.
	now := e.cfg
	now.FinishedTTL = -1
	if st, err := TrimResults(e.ctx, e.js, now, time.Now()); err != nil || st.Purged != 3 {
		t.Fatalf("trim without retention: %+v, %v; want 3 purged", st, err)
	}
	e.left("o2/a0", "o2/b0")
	e.read(c2, 2, 2)
	e.trim(mid.Add(retention), 1)
	e.left("o2/b0")
}
