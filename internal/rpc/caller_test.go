package rpc

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"

	"github.com/nats-io/nats.go"
	"testing"
	"time"
)

// callerStack is a runtime (NATS service + HTTP side) and a Caller served by
// an httptest server at /call/.
type callerStack struct {
	caller *Caller
	url    string // base URL of the caller's server
	client *http.Client
}

func startCallerStack(t *testing.T, limits Limits) *callerStack {
	t.Helper()
	ns := startNATS(t)
	startService(t, connect(t, ns, true), ServiceConfig{Limits: limits})
	rt := startHTTP(t, limits)
	caller := NewCaller(CallerConfig{NC: connect(t, ns, true), RuntimeHTTP: rt.URL(), Limits: limits})
	t.Cleanup(caller.Close)
	mux := http.NewServeMux()
	mux.Handle("/call/", caller)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return &callerStack{caller: caller, url: ts.URL, client: testClient(t)}
}

func TestCallerVias(t *testing.T) {
	st := startCallerStack(t, Limits{})
	for _, tc := range validCases() {
		t.Run(tc.name, func(t *testing.T) {
			var first []byte
			for _, via := range []string{ViaDirect, ViaNATS, ViaHTTP} {
				status, h, out := post(t, st.client, st.url+"/call/"+tc.fn+"?via="+via, tc.body)
				if status != http.StatusOK {
					t.Fatalf("via=%s: status %d: %s", via, status, out)
				}
				if ct := h.Get("Content-Type"); ct != ContentType(tc.fn) {
					t.Fatalf("via=%s: content type %q", via, ct)
				}
				checkReply(t, tc.fn, tc.body, out)
				if first == nil {
					first = out
				} else if !bytes.Equal(out, first) {
					t.Fatalf("via=%s: reply differs from via=direct", via)
				}
			}
		})
	}
	t.Run("default-via-is-nats", func(t *testing.T) {
		status, _, out := post(t, st.client, st.url+"/call/echo", []byte("x"))
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
	for _, tc := range badCases() {
		for _, via := range []string{ViaDirect, ViaNATS, ViaHTTP} {
			t.Run(tc.name+"/"+via, func(t *testing.T) {
				status, h, out := post(t, st.client, st.url+"/call/"+tc.fn+"?via="+via, tc.body)
				checkErrorReply(t, status, h, out, tc.code, tc.msg)
			})
		}
	}
	t.Run("unknown-function", func(t *testing.T) {
		status, h, out := post(t, st.client, st.url+"/call/nope?via=nats", nil)
		checkErrorReply(t, status, h, out, 404, "unknown function")
	})
	t.Run("unknown-via", func(t *testing.T) {
		status, h, out := post(t, st.client, st.url+"/call/echo?via=carrier-pigeon", nil)
		checkErrorReply(t, status, h, out, 404, "unknown via")
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
	ns := startNATS(t)
	nc := connect(t, ns, true)

	// An HTTP address nothing listens on.
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()

	ctx := context.Background()
	t.Run("no-runtime", func(t *testing.T) {
		c := NewCaller(CallerConfig{NC: nc, RuntimeHTTP: goneURL})
		defer c.Close()
		for _, via := range []string{ViaNATS, ViaHTTP} {
			_, err := c.Call(ctx, via, FnEcho, []byte("x"))
			if e := AsError(err); e == nil || e.Code != http.StatusBadGateway {
				t.Fatalf("via=%s: got %v, want 502", via, err)
			}
		}
	})
	t.Run("not-configured", func(t *testing.T) {
		c := NewCaller(CallerConfig{})
		defer c.Close()
		for _, via := range []string{ViaNATS, ViaHTTP} {
			_, err := c.Call(ctx, via, FnEcho, []byte("x"))
			if e := AsError(err); e == nil || e.Code != http.StatusBadGateway {
				t.Fatalf("via=%s: got %v, want 502", via, err)
			}
		}
		if out, err := c.Call(ctx, ViaDirect, FnEcho, []byte("x")); err != nil || string(out) != "x" {
			t.Fatalf("via=direct: got %q %v", out, err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		// A responder that never answers, on NATS and on HTTP.
		sub, err := nc.QueueSubscribe(Subject("", FnEcho), QueueGroup, func(*nats.Msg) {})
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
		c := NewCaller(CallerConfig{NC: nc, RuntimeHTTP: slow.URL, Timeout: 100 * time.Millisecond})
		defer c.Close()
		for _, via := range []string{ViaNATS, ViaHTTP} {
			_, err := c.Call(ctx, via, FnEcho, []byte("x"))
			if e := AsError(err); e == nil || e.Code != http.StatusGatewayTimeout {
				t.Fatalf("via=%s: got %v, want 504", via, err)
			}
		}
	})
}
