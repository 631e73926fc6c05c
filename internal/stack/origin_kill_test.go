package stack

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/client"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// upProcess is a `pipeline up --embedded-nats` OS process with a data dir
// and an origin port that stay the same across restarts.
type upProcess struct {
	t      *testing.T
	bin    string
	dir    string
	listen string
	nats   string // the embedded server's client port, the same across restarts
	allow  string
	proc   *pipelineProcess
	starts int
}

func (p *upProcess) start() {
	p.t.Helper()
	p.starts++
	// A short ack wait: the jobs running when the process died come back
	// after it. No jobs-stream keeper: the test counts the messages the
	// stream ever stored (its last sequence) as jobs.
	env := []string{"PIPELINE_EXECUTOR_POLICY_ALLOW=" + p.allow, "PIPELINE_STREAMS_ACK_WAIT=5s", "PIPELINE_EXECUTOR_JOBS_KEEPER_INTERVAL=-1s"}
	p.proc = startPipelineProcess(p.t, p.bin, fmt.Sprintf("up-%d", p.starts), "http://"+p.listen+"/readyz", []string{
		"up", "--embedded-nats", "--data-dir", filepath.Join(p.dir, "data"), "--executors", "1",
		"--listen", p.listen, "--nats-port", p.nats, "--monitor-port", "-2", "--runtime-listen", "127.0.0.1:0",
		"--no-target", "--log-level", "warn", "--log-format", "json"}, env)
	p.proc.waitReady(p.t, 30*time.Second)
}

func (p *upProcess) kill() {
	_ = p.proc.cmd.Process.Kill()
	<-p.proc.exited
}

// TestOriginKill9WithFetchesInFlight kills `pipeline up` (origin, embedded
// NATS and executor in one process) with SIGKILL while the client package
// has 1,000 fetches in flight, and starts it again on the same data dir and
// port. The client reconnects and re-attaches: every fetch returns exactly
// one result, and the re-sent frames store no second job (one job per
// fetch; a job running when the process died runs again: at least once).
func TestOriginKill9WithFetchesInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: skipped with -short")
	}
	ct := newCountingTarget(t)
	p := &upProcess{t: t, bin: buildPipeline(t), dir: t.TempDir(),
		listen: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), nats: fmt.Sprint(testutil.FreePort(t)),
		allow: strings.TrimPrefix(ct.URL, "http://")}
	p.start()
	defer p.kill()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl, err := client.Dial(ctx, "ws://"+p.listen+"/ws", client.WithReconnectBackoff(50*time.Millisecond, time.Second),
		client.WithReconnectTimeout(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 1000
	var wg sync.WaitGroup
	var errs atomic.Int64
	var firstErr atomic.Value
	results := make([]*client.Result, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := cl.Fetch(ctx, client.Request{URL: fmt.Sprintf("%s/k9?ms=50&i=%d", ct.URL, i)})
			if err != nil {
				errs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			results[i] = res
		}()
	}
	// Kill once a good part has been fetched, with the rest in flight.
	testutil.Eventually(t, 60*time.Second, func() bool { return ct.total() >= n/4 }, "fetches did not start")
	killedAt := ct.total()
	p.kill()
	p.start()
	wg.Wait()
	if e := errs.Load(); e != 0 {
		t.Fatalf("%d of %d fetches failed across the restart; first: %v", e, n, firstErr.Load())
	}
	for i, res := range results {
		if res == nil || res.Status != 200 {
			t.Fatalf("fetch %d: %+v", i, res)
		}
	}
	// One job per fetch across the restart: the client's re-sent frames
	// (same keys) stored nothing new. Jobs that were running when the
	// process died run again (at least once), which the target sees.
	nc, err := nats.Connect("nats://127.0.0.1:" + p.nats)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	jst, err := js.Stream(ctx, broker.JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	if stored := jst.CachedInfo().State.LastSeq; stored != n {
		t.Fatalf("%d jobs stored for %d fetches", stored, n)
	}
	again := ct.total() - n
	t.Logf("killed after %d target requests; %d results, 0 errors, %d jobs stored; %d requests made again for jobs running at the kill (%d seen aborted)",
		killedAt, n, n, again, ct.totalAborted())
}
