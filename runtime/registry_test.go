package runtime

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func TestRegistryRegister(t *testing.T) {
	reg := NewRegistry(Limits{})
	ok := func(context.Context, []byte) ([]byte, error) { return []byte("ok"), nil }
	if got, want := reg.Names(), []string{FnEcho, FnTransform, FnCompute}; !slices.Equal(got, want) {
		t.Fatalf("built-ins: got %v, want %v", got, want)
	}
	for _, name := range []string{"", "a.b", "a b", "a>", "*", string(make([]byte, 65))} {
		if err := reg.Register(name, ok); err == nil {
			t.Errorf("Register(%q): want an error for a name that is not a subject token", name)
		}
	}
	if err := reg.Register("nil-func", nil); err == nil {
		t.Error("Register with a nil Func: want an error")
	}
	if err := reg.Register("my_fn-1", ok); err != nil {
		t.Fatalf("Register(my_fn-1): %v", err)
	}
	for _, name := range []string{"my_fn-1", FnEcho} {
		if err := reg.Register(name, ok); !errors.Is(err, ErrDuplicateFunction) {
			t.Errorf("Register(%q) again: got %v, want ErrDuplicateFunction", name, err)
		}
	}
	if !reg.Has("my_fn-1") || reg.Has("nil-func") {
		t.Errorf("Has: got %v %v, want true false", reg.Has("my_fn-1"), reg.Has("nil-func"))
	}
	if out, err := reg.Call(t.Context(), "my_fn-1", nil); err != nil || string(out) != "ok" {
		t.Fatalf("Call: got %q %v", out, err)
	}
	_, err := reg.Call(t.Context(), "nope", nil)
	if code, msg := status(err); code != 404 || msg != `unknown function "nope" (want echo, transform, compute or my_fn-1)` {
		t.Fatalf("unknown function: got %d %q", code, msg)
	}
	reg.seal()
	if err := reg.Register("late", ok); !errors.Is(err, ErrRegistrySealed) {
		t.Fatalf("Register after seal: got %v, want ErrRegistrySealed", err)
	}
}

// A user function's errors map like the built-ins': a CodeBadRequest
// *broker.Error is 400 with its message, anything else 500; the payload
// limit is enforced before it runs.
func TestUserFunctionErrorsOverHTTP(t *testing.T) {
	reg := NewRegistry(Limits{MaxPayload: 8})
	var ran atomic.Bool
	if err := reg.Register("strict", func(_ context.Context, req []byte) ([]byte, error) {
		ran.Store(true)
		switch string(req) {
		case "bad":
			return nil, badInput("bad input %q", req)
		case "boom":
			return nil, errors.New("boom")
		}
		return req, nil
	}); err != nil {
		t.Fatal(err)
	}
	srv := startHTTP(t, reg)
	c := testutil.HTTPClient(t)
	status, h, out := testutil.Post(t, c, srv.URL()+"/rpc/strict", []byte("bad"))
	testutil.CheckErrorReply(t, status, h, out, 400, `bad input "bad"`)
	status, h, out = testutil.Post(t, c, srv.URL()+"/rpc/strict", []byte("boom"))
	testutil.CheckErrorReply(t, status, h, out, 500, "boom")
	ran.Store(false)
	status, h, out = testutil.Post(t, c, srv.URL()+"/rpc/strict", []byte("123456789"))
	testutil.CheckErrorReply(t, status, h, out, 413, "limit")
	if ran.Load() {
		t.Error("the function ran on a body over the limit")
	}
}
