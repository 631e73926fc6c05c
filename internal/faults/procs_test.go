package faults

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

// pipelineBin is the binary built once by TestMain.
var pipelineBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "pipeline-faults-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pipelineBin = filepath.Join(dir, "pipeline")
	out, err := exec.Command("go", "build", "-o", pipelineBin, "github.com/pipeline-dev/pipeline/cmd/pipeline").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build pipeline: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needBinary(t *testing.T) {
	t.Helper()
	if pipelineBin == "" {
		t.Skip("process-level fault test: skipped in -short mode")
	}
}

// proc is a pipeline role running as an OS process.
type proc struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	log  *testutil.LockedBuffer
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(pipelineBin, args...)
	cmd.SysProcAttr = childAttr()
	cmd.Env = append(os.Environ(), env...)
	p := &proc{t: t, name: name, cmd: cmd, log: &testutil.LockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, tail(p.log.String(), 40))
		}
	})
	return p
}

func (p *proc) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// term sends SIGTERM and waits for the exit; it returns the exit error.
func (p *proc) term(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s did not exit within %v after SIGTERM", p.name, timeout)
	}
}

// logLine finds the last JSON log line with this message.
func (p *proc) logLine(msg string) map[string]any {
	var found map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.log.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == msg {
			found = m
		}
	}
	return found
}

func waitHTTP(t *testing.T, url string, p *proc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, tail(p.log.String(), 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s not ready at %s\n%s", p.name, url, tail(p.log.String(), 30))
}

// waitLog waits until a log line contains s.
func waitLog(t *testing.T, p *proc, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.log.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never logged %q\n%s", p.name, s, tail(p.log.String(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ports of one pipeline deployment under test.
type deployment struct {
	nats, origin, target int
	dataDir              string
	env                  []string
}

func newDeployment(t *testing.T) *deployment {
	ports := testutil.FreePorts(t, 3)
	d := &deployment{nats: ports[0], origin: ports[1], target: ports[2], dataDir: t.TempDir()}
	d.env = []string{
		"PIPELINE_LOG_FORMAT=json",
		"PIPELINE_LOG_LEVEL=info",
		"PIPELINE_STREAMS_ACK_WAIT=1s",
		"PIPELINE_EXECUTOR_POLICY_ALLOW=127.0.0.1:" + strconv.Itoa(d.target),
	}
	return d
}

func (d *deployment) natsURL() string { return "nats://127.0.0.1:" + strconv.Itoa(d.nats) }
func (d *deployment) wsURL() string   { return "ws://127.0.0.1:" + strconv.Itoa(d.origin) + "/ws" }
func (d *deployment) targetURL() string {
	return "http://127.0.0.1:" + strconv.Itoa(d.target)
}

// up starts `pipeline up --embedded-nats` with the given extra args.
func (d *deployment) up(t *testing.T, env []string, args ...string) *proc {
	base := []string{"up", "--embedded-nats", "--data-dir", d.dataDir,
		"--nats-port", strconv.Itoa(d.nats), "--monitor-port", "-2",
		"--listen", "127.0.0.1:" + strconv.Itoa(d.origin),
		"--target-listen", "127.0.0.1:" + strconv.Itoa(d.target),
		"--no-runtime"}
	p := startProc(t, "up", append(append([]string{}, d.env...), env...), append(base, args...)...)
	waitHTTP(t, d.targetURL()+"/", p)
	waitLog(t, p, "pipeline running")
	return p
}

func (d *deployment) executor(t *testing.T, id string) *proc {
	p := startProc(t, "executor "+id, d.env, "executor", "--nats", d.natsURL(), "--id", id, "--concurrency", "32",
		"--ops-listen", "") // no fixed port: tests run in parallel
	waitLog(t, p, "executor consuming jobs")
	return p
}

func (d *deployment) startOrigin(t *testing.T) *proc {
	p := startProc(t, "origin", d.env, "origin", "--nats", d.natsURL(), "--origin-id", "o1",
		"--listen", "127.0.0.1:"+strconv.Itoa(d.origin))
	waitHTTP(t, "http://127.0.0.1:"+strconv.Itoa(d.origin)+"/readyz", p)
	return p
}
