package origin_test

// Tests of the /call caller against a real runtime (NATS service and HTTP
// side). They import the runtime, as only a test may: origin itself never
// does.

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/origin"
	"github.com/pipeline-dev/pipeline/runtime"
)

const (
	ViaDirect = origin.ViaDirect
	ViaNATS   = origin.ViaNATS
	ViaHTTP   = origin.ViaHTTP
	FnEcho    = runtime.FnEcho
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startService runs a runtime Service on nc, shut down by tb.Cleanup.
func startService(tb testing.TB, nc *nats.Conn, reg *runtime.Registry) {
	tb.Helper()
	svc, err := runtime.New(nc, runtime.Config{Registry: reg})
	if err != nil {
		tb.Fatalf("new runtime service: %v", err)
	}
	if err := svc.Start(context.Background()); err != nil {
		tb.Fatalf("start runtime service: %v", err)
	}
	tb.Cleanup(func() {
		if err := svc.Shutdown(context.Background()); err != nil {
			tb.Errorf("shut down runtime service: %v", err)
		}
	})
}

// startHTTP runs the runtime's HTTP side on a free loopback port, shut down
// by tb.Cleanup.
func startHTTP(tb testing.TB, reg *runtime.Registry) *runtime.HTTPServer {
	tb.Helper()
	srv := runtime.NewHTTPServer(runtime.HTTPConfig{Addr: "127.0.0.1:0", Registry: reg})
	if err := srv.Start(context.Background()); err != nil {
		tb.Fatalf("start runtime http: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("shut down runtime http: %v", err)
		}
	})
	return srv
}

// contentType is the media type the caller gives fn's reply.
func contentType(fn string) string {
	if fn == runtime.FnTransform || fn == runtime.FnCompute {
		return "application/json"
	}
	return "application/octet-stream"
}

// asCallError returns err's *origin.CallError, or nil.
func asCallError(err error) *origin.CallError {
	e, _ := err.(*origin.CallError)
	return e
}

// callerStack is a runtime (NATS service + HTTP side) and a Caller served by
// an httptest server at /call/.
type callerStack struct {
	caller *origin.Caller
	url    string // base URL of the caller's server
	client *http.Client
}

func startCallerStack(t *testing.T, limits runtime.Limits) *callerStack {
	t.Helper()
	ns := testutil.StartNATS(t)
	reg := runtime.NewRegistry(limits)
	startService(t, testutil.ConnectVia(t, ns, true), reg)
	rt := startHTTP(t, reg)
	caller := origin.NewCaller(testutil.ConnectVia(t, ns, true), origin.CallConfig{
		Functions: reg, RuntimeHTTP: rt.URL(), MaxPayload: reg.Limits().MaxPayload,
	})
	t.Cleanup(caller.Close)
	mux := http.NewServeMux()
	mux.Handle("/call/", caller)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return &callerStack{caller: caller, url: ts.URL, client: testutil.HTTPClient(t)}
}

var testLimits = runtime.Limits{MaxPayload: testutil.RPCTestMaxPayload, MaxRounds: testutil.RPCTestMaxRounds}

func TestCallerVias(t *testing.T) {
	st := startCallerStack(t, runtime.Limits{})
	for _, tc := range testutil.RPCValidCases() {
		t.Run(tc.Name, func(t *testing.T) {
			var first []byte
			for _, via := range []string{ViaDirect, ViaNATS, ViaHTTP} {
				status, h, out := testutil.Post(t, st.client, st.url+"/call/"+tc.Fn+"?via="+via, tc.Body)
				if status != http.StatusOK {
					t.Fatalf("via=%s: status %d: %s", via, status, out)
				}
				if ct := h.Get("Content-Type"); ct != contentType(tc.Fn) {
					t.Fatalf("via=%s: content type %q", via, ct)
				}
				testutil.CheckRPCReply(t, tc.Fn, tc.Body, out)
				if first == nil {
					first = out
				} else if !bytes.Equal(out, first) {
					t.Fatalf("via=%s: reply differs from via=direct", via)
				}
			}
		})
	}
	t.Run("default-via-is-nats", func(t *testing.T) {
		status, _, out := testutil.Post(t, st.client, st.url+"/call/echo", []byte("x"))
		if status != 200 || string(out) != "x" {
			t.Fatalf("got %d %q", status, out)
		}
	})
	t.Run("strip-prefix", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/echo?via=direct", bytes.NewReader([]byte("y")))
		st.caller.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Body.String() != "y" {
			t.Fatalf("got %d %q", rec.Code, rec.Body.String())
		}
	})
}

func TestCallerErrors(t *testing.T) {
	st := startCallerStack(t, testLimits)
	for _, tc := range testutil.RPCBadCases() {
		for _, via := range []string{ViaDirect, ViaNATS, ViaHTTP} {
			t.Run(tc.Name+"/"+via, func(t *testing.T) {
				status, h, out := testutil.Post(t, st.client, st.url+"/call/"+tc.Fn+"?via="+via, tc.Body)
				testutil.CheckErrorReply(t, status, h, out, tc.Code, tc.Msg)
			})
		}
	}
	t.Run("unknown-function", func(t *testing.T) {
		status, h, out := testutil.Post(t, st.client, st.url+"/call/nope?via=nats", nil)
		testutil.CheckErrorReply(t, status, h, out, 404, "unknown function")
	})
	t.Run("unknown-via", func(t *testing.T) {
		status, h, out := testutil.Post(t, st.client, st.url+"/call/echo?via=carrier-pigeon", nil)
		testutil.CheckErrorReply(t, status, h, out, 404, "unknown via")
	})
	t.Run("get", func(t *testing.T) {
		resp, err := st.client.Get(st.url + "/call/echo")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Fatalf("got %d, want 405", resp.StatusCode)
		}
	})
}

func TestCallerRuntimeUnavailable(t *testing.T) {
	ns := testutil.StartNATS(t)
	nc := testutil.ConnectVia(t, ns, true)

	// An HTTP address nothing listens on.
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()

	ctx := context.Background()
	t.Run("no-runtime", func(t *testing.T) {
		c := origin.NewCaller(nc, origin.CallConfig{RuntimeHTTP: goneURL})
		defer c.Close()
		for _, via := range []string{ViaNATS, ViaHTTP} {
			_, err := c.Call(ctx, via, FnEcho, []byte("x"))
			if e := asCallError(err); e == nil || e.Status != http.StatusBadGateway {
				t.Fatalf("via=%s: got %v, want 502", via, err)
			}
		}
	})
	t.Run("not-configured", func(t *testing.T) {
		c := origin.NewCaller(nil, origin.CallConfig{Functions: runtime.NewRegistry(runtime.Limits{})})
		defer c.Close()
		for _, via := range []string{ViaNATS, ViaHTTP} {
			_, err := c.Call(ctx, via, FnEcho, []byte("x"))
			if e := asCallError(err); e == nil || e.Status != http.StatusBadGateway {
				t.Fatalf("via=%s: got %v, want 502", via, err)
			}
		}
		if out, err := c.Call(ctx, ViaDirect, FnEcho, []byte("x")); err != nil || string(out) != "x" {
			t.Fatalf("via=direct: got %q %v", out, err)
		}
		// Without Functions, via=direct has nothing to run.
		bare := origin.NewCaller(nil, origin.CallConfig{})
		defer bare.Close()
		if _, err := bare.Call(ctx, ViaDirect, FnEcho, []byte("x")); asCallError(err) == nil || asCallError(err).Status != http.StatusBadGateway {
			t.Fatalf("via=direct without Functions: got %v, want 502", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		// A responder that never answers, on NATS and on HTTP.
		sub, err := nc.QueueSubscribe(broker.Subjects{}.RPC(FnEcho), broker.RPCQueueGroup, func(*nats.Msg) {})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		block := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-block:
			}
		}))
		defer slow.Close()
		defer close(block)
		c := origin.NewCaller(nc, origin.CallConfig{RuntimeHTTP: slow.URL, Timeout: 100 * time.Millisecond})
		defer c.Close()
		for _, via := range []string{ViaNATS, ViaHTTP} {
			_, err := c.Call(ctx, via, FnEcho, []byte("x"))
			if e := asCallError(err); e == nil || e.Status != http.StatusGatewayTimeout {
				t.Fatalf("via=%s: got %v, want 504", via, err)
			}
		}
	})
}

// A user function registered in the runtime is callable through every via,
// and its errors keep their status: a CodeBadRequest *broker.Error is 400,
// any other error 500.
func TestCallerUserFunction(t *testing.T) {
	ns := testutil.StartNATS(t)
	reg := runtime.NewRegistry(runtime.Limits{})
	if err := reg.Register("greet", func(_ context.Context, req []byte) ([]byte, error) {
		switch string(req) {
		case "":
			return nil, broker.Errorf(broker.CodeBadRequest, "empty name")
		case "crash":
			return nil, io.ErrUnexpectedEOF
		}
		return append([]byte("hello, "), req...), nil
	}); err != nil {
		t.Fatal(err)
	}
	startService(t, testutil.ConnectVia(t, ns, true), reg)
	rt := startHTTP(t, reg)
	c := origin.NewCaller(testutil.ConnectVia(t, ns, true), origin.CallConfig{Functions: reg, RuntimeHTTP: rt.URL()})
	defer c.Close()
	for _, via := range []string{ViaDirect, ViaNATS, ViaHTTP} {
		out, err := c.Call(t.Context(), via, "greet", []byte("ada"))
		if err != nil || string(out) != "hello, ada" {
			t.Fatalf("via=%s: got %q %v", via, out, err)
		}
		_, err = c.Call(t.Context(), via, "greet", nil)
		if e := asCallError(err); e == nil || e.Status != 400 || e.Message != "empty name" {
			t.Fatalf("via=%s bad input: got %v, want 400 empty name", via, err)
		}
		_, err = c.Call(t.Context(), via, "greet", []byte("crash"))
		if e := asCallError(err); e == nil || e.Status != 500 {
			t.Fatalf("via=%s failure: got %v, want 500", via, err)
		}
	}
}
