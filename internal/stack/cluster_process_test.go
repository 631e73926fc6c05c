package stack

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// buildPipeline builds cmd/pipeline into a temporary directory and returns
// the binary's path. The test is skipped when no go tool is at hand.
func buildPipeline(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool in PATH to build the pipeline binary")
	}
	bin := filepath.Join(t.TempDir(), "pipeline")
	cmd := exec.Command(goTool, "build", "-o", bin, "./cmd/pipeline")
	cmd.Dir = filepath.Join("..", "..") // the module root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/pipeline: %v\n%s", err, out)
	}
	return bin
}

// pipelineProcess is a `pipeline` OS process (one role).
type pipelineProcess struct {
	cmd     *exec.Cmd
	logs    string
	ready   string        // its /readyz URL
	exited  chan struct{} // closed when the process has exited
	exitErr error         // cmd.Wait's result, set before exited is closed
}

// startPipelineProcess starts bin with args and env (added to this
// process's environment, less its PIPELINE_* variables), logging to a file named after name; readyURL is
// the /readyz URL waitReady polls. The process is killed at test end if it
// still runs.
func startPipelineProcess(t *testing.T, bin, name, readyURL string, args, env []string) *pipelineProcess {
	t.Helper()
	logs := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = childAttr()
	// Settings come from args and env only: inherited PIPELINE_* variables
	// (the measurement switches such as PIPELINE_BOUNDS among them) would
	// be read as settings, and an unknown one stops the process.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PIPELINE_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &pipelineProcess{cmd: cmd, logs: logs, ready: readyURL, exited: make(chan struct{})}
	go func() {
		p.exitErr = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	return p
}

// startExecutorProcess starts `pipeline executor` with id against cfg's NATS
// URLs and the same streams settings (every role provisions the streams, so
// a mismatch would rescale them), allowed to fetch from the test target.
// Its ops listener is on a free port (waitReady polls its /readyz).
// Concurrency 0 leaves the flag out; extra arguments (e.g. --config FILE)
// are added to the command line.
func startExecutorProcess(t *testing.T, bin string, st *Stack, natsURL, id string, concurrency int, extra ...string) *pipelineProcess {
	t.Helper()
	ops := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	env := []string{
		"PIPELINE_STREAMS_REPLICAS=" + fmt.Sprint(st.cfg.Streams.Replicas),
		"PIPELINE_STREAMS_ACK_WAIT=" + st.cfg.Streams.AckWait.String(),
		"PIPELINE_EXECUTOR_POLICY_ALLOW=" + strings.TrimPrefix(st.TargetURL(), "http://"),
	}
	if a := st.cfg.NATS.Auth; a.Enabled {
		// Only the executor's own user: no admin credentials, so the process
		// does not provision and expects the streams to exist.
		env = append(env,
			"PIPELINE_NATS_AUTH_ENABLED=true",
			"PIPELINE_NATS_AUTH_EXECUTOR_USER="+a.Executor.User,
			"PIPELINE_NATS_AUTH_EXECUTOR_PASSWORD="+a.Executor.Password,
		)
	}
	args := []string{"executor", "--nats", natsURL, "--id", id, "--log-level", "warn", "--log-format", "json", "--ops-listen", ops}
	if concurrency > 0 {
		args = append(args, "--concurrency", fmt.Sprint(concurrency))
	}
	return startPipelineProcess(t, bin, id, "http://"+ops+"/readyz", append(args, extra...), env)
}

// waitReady waits until the process answers 200 on its /readyz (an
// executor's ops listener starts only after its executors are consuming
// jobs; an origin's once it listens and its consumer exists).
func (p *pipelineProcess) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	exited := false
	ready := testutil.WaitFor(timeout, func() bool {
		select {
		case <-p.exited:
			exited = true
			return true
		default:
		}
		resp, err := client.Get(p.ready)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if exited || !ready {
		out, _ := os.ReadFile(p.logs)
		t.Fatalf("process not ready within %v (exited: %v, %v); logs:\n%s", timeout, exited, p.exitErr, out)
	}
}

// stop sends SIGTERM and waits for a clean exit (an executor drains its
// in-flight jobs).
func (p *pipelineProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signal executor process: %v", err)
	}
	select {
	case <-p.exited:
		if p.exitErr != nil {
			out, _ := os.ReadFile(p.logs)
			t.Fatalf("process exited with %v; logs:\n%s", p.exitErr, out)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("process still running 30 s after SIGTERM")
	}
}

// TestClusterExecutorProcessJoinsAndLeavesMidLoad starts an executor OS
// process while a backlog is being worked off by one slow in-process
// executor: once it is consuming, it must take a share of the jobs. Then,
// during a second batch, it is stopped with SIGTERM: it drains, exits 0, and
// every fetch of both batches still ends exactly once.
//
// It runs with nats.auth on: every node has the accounts (the origin alone
// in its own), and the process connects as the executor user from its
// environment (PIPELINE_NATS_AUTH_*), as a deployed executor would.
func TestClusterExecutorProcessJoinsAndLeavesMidLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the pipeline binary and starts a cluster: skipped with -short")
	}
	bin := buildPipeline(t) // before the clock starts
	ac := authConfig()
	cl := startClusterAuth(t, 3, ac)
	cfg := clusterConfig(cl)
	cfg.NATS.Auth = ac
	cfg.Executor.Count = 1
	cfg.Executor.Concurrency = 4 // 100 fetches/s at 40 ms: a backlog builds up
	cfg.Executor.ID = "in-process"
	st := startClusterStack(t, cfg)

	l := testutil.NewLedger()
	lcs := []*testutil.LedgerConn{testutil.DialLedger(t, st.OriginWS(), l), testutil.DialLedger(t, st.OriginWS(), l)}
	const n = 300
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := startDelayed(lcs[i%2], fmt.Sprintf("j%d", i), st.TargetURL(), 40); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Half the backlog, then the process joins; the other half goes out
	// only once it consumes, so a slow process start on a busy machine
	// cannot let the in-process executor finish everything alone.
	send(0, n/2)
	proc := startExecutorProcess(t, bin, st, cl.URL(), "extra-proc", 16)
	proc.waitReady(t, 30*time.Second)
	send(n/2, n)
	if !l.WaitDone(30 * time.Second) {
		t.Fatalf("%d fetches without a final frame", l.Pending())
	}
	joined := l.ByExecutor("j")
	t.Logf("backlog of %d: results by executor %v", n, joined)
	if joined["extra-proc"] < n/10 {
		out, _ := os.ReadFile(proc.logs)
		t.Fatalf("the executor process did %d of %d jobs, want a share (≥ %d); its logs:\n%s", joined["extra-proc"], n, n/10, out)
	}

	// Remove it mid-load: SIGTERM stops its pulls and drains its fetches.
	for i := 0; i < 200; i++ {
		if err := startDelayed(lcs[i%2], fmt.Sprintf("r%d", i), st.TargetURL(), 40); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.ByExecutor("r")["extra-proc"] < 10 {
		if time.Now().After(deadline) {
			t.Fatalf("executor process took no job of the second batch: %v", l.ByExecutor("r"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	proc.stop(t)
	if !l.WaitDone(30 * time.Second) {
		t.Fatalf("%d fetches without a final frame after the executor process left", l.Pending())
	}
	left := l.ByExecutor("r")
	t.Logf("second batch: results by executor %v", left)
	if left["in-process"] == 0 {
		t.Errorf("the remaining executor took no job after the process left: %v", left)
	}
	sum := l.Check(t)
	if sum.Results != sum.Sent {
		t.Errorf("%d of %d fetches got a result, want all (codes %v)", sum.Results, sum.Sent, sum.Outcomes)
	}
}
