package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func request(t *testing.T, nc *nats.Conn, subject string, body []byte) *nats.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, subject, body)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return msg
}

func TestServiceFunctions(t *testing.T) {
	for _, inProcess := range []bool{true, false} {
		t.Run(fmt.Sprintf("inprocess=%v", inProcess), func(t *testing.T) {
			ns := testutil.StartNATS(t)
			startService(t, testutil.ConnectVia(t, ns, inProcess), Config{})
			nc := testutil.ConnectVia(t, ns, inProcess)
			for _, tc := range validCases() {
				t.Run(tc.name, func(t *testing.T) {
					msg := request(t, nc, "pipeline.rpc."+tc.fn, tc.body)
					if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
						t.Fatalf("error reply %s: %s", code, msg.Header.Get(micro.ErrorHeader))
					}
					checkReply(t, tc.fn, tc.body, msg.Data)
				})
			}
		})
	}
}

func TestServiceBadInput(t *testing.T) {
	ns := testutil.StartNATS(t)
	startService(t, testutil.ConnectVia(t, ns, false), Config{Registry: testRegistry()})
	nc := testutil.ConnectVia(t, ns, false)
	for _, tc := range badCases() {
		t.Run(tc.name, func(t *testing.T) {
			msg := request(t, nc, "pipeline.rpc."+tc.fn, tc.body)
			code, desc := msg.Header.Get(micro.ErrorCodeHeader), msg.Header.Get(micro.ErrorHeader)
			if code != fmt.Sprint(tc.code) || !strings.Contains(desc, tc.msg) {
				t.Fatalf("got error headers %q %q, want %d containing %q", code, desc, tc.code, tc.msg)
			}
			var body struct{ Error string }
			if err := json.Unmarshal(msg.Data, &body); err != nil || body.Error != desc {
				t.Fatalf("error body %q: want {\"error\":%q} (%v)", msg.Data, desc, err)
			}
		})
	}
}

func TestServiceSubjectPrefix(t *testing.T) {
	ns := testutil.StartNATS(t)
	startService(t, testutil.ConnectVia(t, ns, true), Config{Subjects: broker.Subjects{Prefix: "acme"}})
	nc := testutil.ConnectVia(t, ns, true)
	msg := request(t, nc, "acme.rpc.echo", []byte("hi"))
	if string(msg.Data) != "hi" {
		t.Fatalf("got %q, want %q", msg.Data, "hi")
	}
	if got := (broker.Subjects{Prefix: "acme"}).RPC(FnCompute); got != "acme.rpc.compute" {
		t.Fatalf("Subject: got %q", got)
	}
	if got := (broker.Subjects{}).RPC(FnEcho); got != "pipeline.rpc.echo" {
		t.Fatalf("Subject: got %q", got)
	}
}

func TestServiceDiscovery(t *testing.T) {
	ns := testutil.StartNATS(t)
	svc := startService(t, testutil.ConnectVia(t, ns, false), Config{Workers: 3})
	nc := testutil.ConnectVia(t, ns, false)

	for _, subject := range []string{"$SRV.PING", "$SRV.PING.runtime", "$SRV.PING.runtime." + svc.ID()} {
		var ping micro.Ping
		if err := json.Unmarshal(request(t, nc, subject, nil).Data, &ping); err != nil {
			t.Fatalf("%s: %v", subject, err)
		}
		if ping.Name != ServiceName || ping.ID != svc.ID() || ping.Version != Version || ping.Type != micro.PingResponseType {
			t.Fatalf("%s: got %+v", subject, ping)
		}
	}

	var info micro.Info
	if err := json.Unmarshal(request(t, nc, "$SRV.INFO.runtime", nil).Data, &info); err != nil {
		t.Fatalf("info: %v", err)
	}
	if info.Name != ServiceName || info.Metadata["workers"] != "3" {
		t.Fatalf("info: got %+v", info)
	}
	got := map[string]string{}
	for _, e := range info.Endpoints {
		got[e.Name] = e.Subject + " " + e.QueueGroup
	}
	want := map[string]string{
		"echo":      "pipeline.rpc.echo runtime",
		"transform": "pipeline.rpc.transform runtime",
		"compute":   "pipeline.rpc.compute runtime",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("endpoints: got %v, want %v", got, want)
	}

	request(t, nc, "pipeline.rpc.echo", []byte("x"))
	request(t, nc, "pipeline.rpc.transform", []byte("not json"))
	// micro counts a request when the handler returns, which may be just
	// after the reply went out: ask again until both are counted.
	var byName map[string]*micro.EndpointStats
	for deadline := time.Now().Add(5 * time.Second); ; {
		var stats micro.Stats
		if err := json.Unmarshal(request(t, nc, "$SRV.STATS.runtime", nil).Data, &stats); err != nil {
			t.Fatalf("stats: %v", err)
		}
		byName = map[string]*micro.EndpointStats{}
		total := 0
		for _, e := range stats.Endpoints {
			byName[e.Name] = e
			total += e.NumRequests
		}
		if total >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for fn, wantErrors := range map[string]int64{"echo": 0, "transform": 1} {
		e := byName[fn]
		if e == nil || e.NumRequests != 1 {
			t.Fatalf("%s stats: got %+v, want 1 request", fn, e)
		}
		var data EndpointData
		if err := json.Unmarshal(e.Data, &data); err != nil {
			t.Fatalf("%s stats data %s: %v", fn, e.Data, err)
		}
		if data.NumRequests != 1 || data.NumErrors != wantErrors || data.Workers != 3 {
			t.Fatalf("%s stats data: got %+v, want 1 request, %d errors, 3 workers", fn, data, wantErrors)
		}
	}
}

func TestServiceInstancesShareRequests(t *testing.T) {
	ns := testutil.StartNATS(t)
	a := startService(t, testutil.ConnectVia(t, ns, false), Config{})
	b := startService(t, testutil.ConnectVia(t, ns, false), Config{})
	nc := testutil.ConnectVia(t, ns, false)
	const n = 200
	for i := range n {
		body := fmt.Appendf(nil, "req-%d", i)
		if got := request(t, nc, "pipeline.rpc.echo", body).Data; string(got) != string(body) {
			t.Fatalf("got %q, want %q", got, body)
		}
	}
	// The pool's own counters: they count a request before its reply is
	// sent (micro's NumRequests is updated after the hand-off, which may be
	// after the reply arrived).
	count := func(s *Service) int64 {
		for _, e := range s.Stats().Endpoints {
			if e.Name == FnEcho {
				var d EndpointData
				if err := json.Unmarshal(e.Data, &d); err != nil {
					t.Fatalf("stats data %s: %v", e.Data, err)
				}
				return d.NumRequests
			}
		}
		return 0
	}
	ca, cb := count(a), count(b)
	if ca == 0 || cb == 0 || ca+cb != n {
		t.Fatalf("instance A served %d, B %d: want both > 0 and %d in total", ca, cb, n)
	}
	t.Logf("instance A served %d, instance B %d", ca, cb)

	// Stopping one instance leaves the other serving everything.
	if err := a.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if got := request(t, nc, "pipeline.rpc.echo", []byte("after")).Data; string(got) != "after" {
			t.Fatalf("after stop: got %q", got)
		}
	}
}

// TestServiceRunsRequestsConcurrently proves one endpoint of one instance
// runs several requests at once: the function blocks until all of them have
// arrived, which only completes if they run in parallel.
func TestServiceRunsRequestsConcurrently(t *testing.T) {
	const workers = 4
	arrived := make(chan struct{}, workers)
	release := make(chan struct{})
	ns := testutil.StartNATS(t)
	reg := NewRegistry(Limits{})
	// A user function that blocks, then echoes.
	if err := reg.Register("wait", func(ctx context.Context, body []byte) ([]byte, error) {
		arrived <- struct{}{}
		<-release
		return Echo(ctx, body)
	}); err != nil {
		t.Fatal(err)
	}
	startService(t, testutil.ConnectVia(t, ns, true), Config{Workers: workers, Registry: reg})
	nc := testutil.ConnectVia(t, ns, true)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() {
			body := fmt.Appendf(nil, "%d", i)
			msg, err := nc.RequestWithContext(ctx, "pipeline.rpc.wait", body)
			if err == nil && string(msg.Data) != string(body) {
				err = fmt.Errorf("got %q, want %q", msg.Data, body)
			}
			errs <- err
		})
	}
	for i := range workers {
		select {
		case <-arrived:
		case <-ctx.Done():
			close(release)
			wg.Wait()
			t.Fatalf("only %d of %d requests ran at once", i, workers)
		}
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestServiceStop(t *testing.T) {
	ns := testutil.StartNATS(t)
	svc, err := New(testutil.ConnectVia(t, ns, true), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(t.Context()); err != nil {
		t.Fatalf("start: %v", err)
	}
	if err := svc.Start(t.Context()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second start: got %v, want ErrStarted", err)
	}
	nc := testutil.ConnectVia(t, ns, true)
	request(t, nc, "pipeline.rpc.echo", []byte("x"))
	if err := svc.Shutdown(t.Context()); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := svc.Shutdown(t.Context()); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if err := svc.Start(t.Context()); !errors.Is(err, ErrStopped) {
		t.Fatalf("start after shutdown: got %v, want ErrStopped", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := nc.RequestWithContext(ctx, "pipeline.rpc.echo", []byte("x")); err != nats.ErrNoResponders {
		t.Fatalf("after stop: got %v, want no responders", err)
	}
}

func TestNewServiceErrors(t *testing.T) {
	if _, err := New(nil, Config{}); err == nil {
		t.Fatal("nil conn: want an error")
	}
	ns := testutil.StartNATS(t)
	if _, err := New(testutil.ConnectVia(t, ns, true), Config{Version: "not-semver"}); err == nil {
		t.Fatal("bad version: want an error")
	}
	// Shut down before Start: Start then fails with ErrStopped.
	svc, err := New(testutil.ConnectVia(t, ns, true), Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Shutdown(t.Context()); err != nil {
		t.Fatalf("shutdown before start: %v", err)
	}
	if err := svc.Start(t.Context()); !errors.Is(err, ErrStopped) {
		t.Fatalf("start after shutdown: got %v, want ErrStopped", err)
	}
}
