package loadgen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/loadgen"
	"github.com/pipeline-dev/pipeline/origin"
	"github.com/pipeline-dev/pipeline/runtime"
)

// rpcTestStack is an embedded NATS server, a runtime service (NATS and HTTP
// sides) and a caller served at /call/, all on free loopback ports and torn
// down by t.Cleanup.
type rpcTestStack struct {
	ns        *server.Server
	callerURL string
}

func startRPCTestStack(t *testing.T, withService bool) *rpcTestStack {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, StoreDir: t.TempDir(),
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	conn := func() *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		t.Cleanup(nc.Close)
		return nc
	}

	var runtimeURL string
	if withService {
		svc, err := runtime.New(conn(), runtime.Config{})
		if err != nil {
			t.Fatalf("runtime service: %v", err)
		}
		if err := svc.Start(context.Background()); err != nil {
			t.Fatalf("runtime service: %v", err)
		}
		t.Cleanup(func() { _ = svc.Shutdown(context.Background()) })
		hs := runtime.NewHTTPServer(runtime.HTTPConfig{Addr: "127.0.0.1:0"})
		if err := hs.Start(context.Background()); err != nil {
			t.Fatalf("runtime http: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = hs.Shutdown(ctx)
		})
		runtimeURL = hs.URL()
	}
	caller := origin.NewCaller(conn(), origin.CallConfig{Functions: runtime.NewRegistry(runtime.Limits{}), RuntimeHTTP: runtimeURL})
	t.Cleanup(caller.Close)
	mux := http.NewServeMux()
	mux.Handle("/call/", caller)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return &rpcTestStack{ns: ns, callerURL: ts.URL}
}

func TestRunRPCReportHasOneCasePerCombination(t *testing.T) {
	// Registered first, so it runs after every other cleanup: the stack and
	// RunRPC must leave no goroutine behind.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	st := startRPCTestStack(t, true)
	vias := []string{"direct", "nats", "http", "nats-raw"}
	payloads := []int{100, 1024}
	var progress bytes.Buffer
	rep, err := loadgen.RunRPC(context.Background(), loadgen.RPCConfig{
		CallerURL:   st.callerURL,
		NATSURL:     st.ns.ClientURL(),
		Payloads:    payloads,
		Vias:        vias,
		Iterations:  10,
		Warmup:      2,
		Concurrency: 3,
		Progress:    &progress,
	})
	if err != nil {
		t.Fatalf("RunRPC: %v", err)
	}
	if rep.Errors() != 0 {
		t.Fatalf("%d calls failed: %+v", rep.Errors(), rep.Cases)
	}

	var buf bytes.Buffer
	if err := rep.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Mode  string `json:"mode"`
		Cases []struct {
			Fn           string              `json:"fn"`
			PayloadBytes int                 `json:"payload_bytes"`
			Via          string              `json:"via"`
			Iterations   int                 `json:"iterations"`
			OK           int                 `json:"ok"`
			LatencyMS    map[string]float64  `json:"latency_ms"`
			OverheadMS   *map[string]float64 `json:"overhead_ms"`
		} `json:"cases"`
	}
	dec := json.NewDecoder(&buf)
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("report is not JSON: %v", err)
	}
	if got.Mode != "rpc" {
		t.Fatalf("mode: got %q, want rpc", got.Mode)
	}
	seen := map[string]int{}
	for _, c := range got.Cases {
		seen[fmt.Sprintf("%s/%d/%s", c.Fn, c.PayloadBytes, c.Via)]++
		if c.Iterations != 10 || c.OK != 10 {
			t.Errorf("%s %d %s: iterations %d ok %d, want 10 and 10", c.Fn, c.PayloadBytes, c.Via, c.Iterations, c.OK)
		}
		for _, k := range []string{"p50", "p95", "p99", "p999", "max", "mean"} {
			if v, ok := c.LatencyMS[k]; !ok || v <= 0 {
				t.Errorf("%s %d %s: latency_ms.%s = %v, want > 0", c.Fn, c.PayloadBytes, c.Via, k, v)
			}
		}
		if c.OverheadMS == nil {
			t.Errorf("%s %d %s: no overhead_ms", c.Fn, c.PayloadBytes, c.Via)
		} else if _, ok := (*c.OverheadMS)["p99"]; !ok {
			t.Errorf("%s %d %s: overhead_ms has no p99", c.Fn, c.PayloadBytes, c.Via)
		} else if c.Via == "direct" && ((*c.OverheadMS)["p50"] != 0 || (*c.OverheadMS)["p99"] != 0) {
			t.Errorf("direct overhead: got %v, want zeros", *c.OverheadMS)
		}
	}
	want := 0
	reg := runtime.NewRegistry(runtime.Limits{})
	for _, fn := range reg.Names() {
		for _, p := range payloads {
			for _, via := range vias {
				want++
				if n := seen[fmt.Sprintf("%s/%d/%s", fn, p, via)]; n != 1 {
					t.Errorf("case %s/%d/%s appears %d times, want once", fn, p, via, n)
				}
			}
		}
	}
	if len(got.Cases) != want {
		t.Errorf("got %d cases, want %d", len(got.Cases), want)
	}

	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"p50 ms", "+p99 ms", "transform", "1KB", "nats-raw"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, text.String())
		}
	}
	if lines := strings.Count(progress.String(), "\n"); lines != want {
		t.Errorf("progress: got %d lines, want %d", lines, want)
	}
}

func TestRunRPCCountsFailedCalls(t *testing.T) {
	// A caller without a runtime: direct works, nats and http fail with 502.
	st := startRPCTestStack(t, false)
	rep, err := loadgen.RunRPC(context.Background(), loadgen.RPCConfig{
		CallerURL:  st.callerURL,
		Fns:        []string{"echo"},
		Payloads:   []int{100},
		Iterations: 4,
		Warmup:     -1,
	})
	if err != nil {
		t.Fatalf("RunRPC: %v", err)
	}
	for _, c := range rep.Cases {
		switch c.Via {
		case "direct":
			if c.Errors != 0 || c.OK != 4 {
				t.Errorf("direct: %+v", c)
			}
		default:
			if c.Errors != 4 || c.ErrorsByCode["http_502"] != 4 || c.OverheadMS != nil {
				t.Errorf("%s: got %+v, want 4 http_502 errors and no overhead", c.Via, c)
			}
		}
	}
	if rep.Errors() != 8 {
		t.Errorf("Errors(): got %d, want 8", rep.Errors())
	}
}

func TestRunRPCUnreachable(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	ctx := context.Background()

	_, err := loadgen.RunRPC(ctx, loadgen.RPCConfig{CallerURL: closedURL, Iterations: 1})
	if !errors.Is(err, loadgen.ErrCallerUnreachable) || !strings.Contains(err.Error(), closedURL) {
		t.Fatalf("closed caller port: got %v, want ErrCallerUnreachable naming %s", err, closedURL)
	}

	// Something answers, but not a caller.
	notCaller := httptest.NewServer(http.NotFoundHandler())
	defer notCaller.Close()
	_, err = loadgen.RunRPC(ctx, loadgen.RPCConfig{CallerURL: notCaller.URL, Iterations: 1})
	if !errors.Is(err, loadgen.ErrCallerUnreachable) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("not a caller: got %v, want ErrCallerUnreachable with HTTP 404", err)
	}

	// nats-raw: NATS up but no runtime service.
	st := startRPCTestStack(t, false)
	_, err = loadgen.RunRPC(ctx, loadgen.RPCConfig{NATSURL: st.ns.ClientURL(), Vias: []string{"nats-raw"}, Iterations: 1})
	if !errors.Is(err, loadgen.ErrRuntimeUnreachable) {
		t.Fatalf("no runtime: got %v, want ErrRuntimeUnreachable", err)
	}
	// nats-raw: nothing listens at the NATS URL.
	_, err = loadgen.RunRPC(ctx, loadgen.RPCConfig{NATSURL: "nats://" + strings.TrimPrefix(closedURL, "http://"), Vias: []string{"nats-raw"}, Iterations: 1})
	if !errors.Is(err, loadgen.ErrRuntimeUnreachable) {
		t.Fatalf("no NATS: got %v, want ErrRuntimeUnreachable", err)
	}
}

func TestRunRPCConfigErrors(t *testing.T) {
	for _, cfg := range []loadgen.RPCConfig{
		{Fns: []string{"nope"}},
		{Vias: []string{"pigeon"}},
		{Payloads: []int{0}},
		{Iterations: -1},
		{CallerURL: "ftp://x"},
	} {
		if _, err := loadgen.RunRPC(context.Background(), cfg); err == nil {
			t.Errorf("%+v: want an error", cfg)
		}
	}
}

func TestRPCPayload(t *testing.T) {
	reg := runtime.NewRegistry(runtime.Limits{})
	for _, fn := range reg.Names() {
		for _, size := range []int{100, 1 << 10, 10 << 10, 100 << 10} {
			body := loadgen.RPCPayload(fn, size, 3)
			if len(body) != size {
				t.Errorf("%s %d: body is %d bytes", fn, size, len(body))
			}
			if !bytes.Equal(body, loadgen.RPCPayload(fn, size, 3)) {
				t.Errorf("%s %d: not deterministic", fn, size)
			}
			if _, err := reg.Call(context.Background(), fn, body); err != nil {
				t.Errorf("%s %d: the runtime rejects it: %v", fn, size, err)
			}
		}
	}
	if !bytes.Contains(loadgen.RPCPayload("compute", 100, 7), []byte(`"rounds":7}`)) {
		t.Error("compute payload does not carry its rounds")
	}
	// Below the JSON wrapper's size the body is the smallest valid one.
	if _, err := reg.Call(context.Background(), "compute", loadgen.RPCPayload("compute", 1, 1)); err != nil {
		t.Errorf("tiny compute payload: %v", err)
	}
}

func TestParseRPCPayloads(t *testing.T) {
	got, err := loadgen.ParseRPCPayloads("100B, 1KB,10kb,100KiB,1MB,512")
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{100, 1024, 10240, 102400, 1 << 20, 512}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"", "x", "-1KB", "1.5KB", "0"} {
		if _, err := loadgen.ParseRPCPayloads(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	for n, want := range map[int]string{100: "100B", 1024: "1KB", 102400: "100KB", 1 << 20: "1MB", 1500: "1500B"} {
		if got := loadgen.RPCSizeName(n); got != want {
			t.Errorf("RPCSizeName(%d): got %q, want %q", n, got, want)
		}
	}
}

func TestRPCPresetIterations(t *testing.T) {
	for name, want := range map[string]int{"quick": 20, "standard": 100, "full": 1000} {
		if got, err := loadgen.RPCPresetIterations(name); err != nil || got != want {
			t.Errorf("%s: got %d %v, want %d", name, got, err, want)
		}
	}
	if _, err := loadgen.RPCPresetIterations("huge"); err == nil {
		t.Error("unknown preset: want an error")
	}
}
