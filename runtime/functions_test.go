package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pipeline-dev/pipeline/broker"
)

func TestFunctionsMatchIndependentComputation(t *testing.T) {
	reg := NewRegistry(Limits{})
	for _, tc := range validCases() {
		t.Run(tc.name, func(t *testing.T) {
			out, err := reg.Call(t.Context(), tc.fn, tc.body)
			if err != nil {
				t.Fatalf("Call(%s): %v", tc.fn, err)
			}
			checkReply(t, tc.fn, tc.body, out)
			if tc.fn != FnEcho && !json.Valid(out) {
				t.Fatalf("reply is not valid JSON: %.80q", out)
			}
		})
	}
}

func TestExportedFunctions(t *testing.T) {
	fns := map[string]Func{FnEcho: Echo, FnTransform: Transform, FnCompute: Compute}
	for _, tc := range validCases() {
		out, err := fns[tc.fn](t.Context(), tc.body)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		checkReply(t, tc.fn, tc.body, out)
	}
}

func TestTransformProtocolExamples(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ǆ", "Ǆ"}, {"é", "É"}, {"ß", "ß"}, {"abc", "ABC"}, {"<a&b>", "<A&B>"},
	} {
		body, _ := json.Marshal(map[string]string{"data": tc.in})
		out, err := Transform(t.Context(), body)
		if err != nil {
			t.Fatalf("Transform(%q): %v", tc.in, err)
		}
		var got struct {
			Data   string `json:"data"`
			Length int    `json:"length"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("reply %q: %v", out, err)
		}
		if got.Data != tc.want || got.Length != len(tc.in) {
			t.Errorf("Transform(%q): got %q length %d, want %q length %d", tc.in, got.Data, got.Length, tc.want, len(tc.in))
		}
	}
}

func TestFunctionErrors(t *testing.T) {
	reg := testRegistry()
	for _, tc := range badCases() {
		t.Run(tc.name, func(t *testing.T) {
			_, err := reg.Call(t.Context(), tc.fn, tc.body)
			var e *broker.Error
			if !errors.As(err, &e) {
				t.Fatalf("got error %v (%T), want *broker.Error", err, err)
			}
			if code, msg := status(err); code != tc.code || !strings.Contains(msg, tc.msg) {
				t.Fatalf("got %d %q, want %d containing %q", code, msg, tc.code, tc.msg)
			}
		})
	}
	def := NewRegistry(Limits{})
	t.Run("unknown-function", func(t *testing.T) {
		_, err := def.Call(t.Context(), "nope", nil)
		if code, msg := status(err); !errors.Is(err, ErrUnknownFunction) || code != 404 ||
			msg != `unknown function "nope" (want echo, transform or compute)` {
			t.Fatalf("got %v (%d %q), want a 404 ErrUnknownFunction", err, code, msg)
		}
	})
	t.Run("default-limits", func(t *testing.T) {
		if _, err := def.Call(t.Context(), FnEcho, make([]byte, DefaultMaxPayload)); err != nil {
			t.Fatalf("1 MiB echo: %v", err)
		}
		if _, err := def.Call(t.Context(), FnEcho, make([]byte, DefaultMaxPayload+1)); statusOf(err) != 413 {
			t.Fatalf("1 MiB + 1 echo: got %v, want 413", err)
		}
		if _, err := def.Call(t.Context(), FnCompute, []byte(`{"data":"x","rounds":1000001}`)); statusOf(err) != 400 {
			t.Fatalf("1,000,001 rounds: got %v, want 400", err)
		}
	})
	t.Run("compute-cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := def.Call(ctx, FnCompute, []byte(`{"data":"x","rounds":1000000}`)); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled compute: got %v, want context.Canceled", err)
		}
	})
}

// FuzzTransform checks the hand-written JSON reader against encoding/json: a
// body is accepted exactly when encoding/json sees an object whose last
// "data" member is a string, and then the reply matches.
func FuzzTransform(f *testing.F) {
	for _, tc := range validCases() {
		if tc.fn == FnTransform && len(tc.body) < 1024 {
			f.Add(tc.body)
		}
	}
	for _, tc := range badCases() {
		if tc.fn == FnTransform && len(tc.body) < 1024 {
			f.Add(tc.body)
		}
	}
	f.Add([]byte(`{"data":1,"data":"x"}`))
	f.Add([]byte(`{"data":"x","data":[1]}`))
	f.Add([]byte("{\"data\":\"\xff\xfe\xc3\"}"))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := Transform(context.Background(), body)
		var members map[string]json.RawMessage
		var want *string
		if json.Unmarshal(body, &members) == nil {
			if raw, ok := members["data"]; ok && string(raw) != "null" {
				var s string
				if json.Unmarshal(raw, &s) == nil {
					want = &s
				}
			}
		}
		if want == nil {
			if err == nil {
				t.Fatalf("accepted %q (reply %q), encoding/json finds no string data", body, out)
			}
			if statusOf(err) != 400 {
				t.Fatalf("%q: got %v, want a 400", body, err)
			}
			return
		}
		if err != nil {
			if strings.Contains(err.Error(), "nesting") {
				return // deliberately stricter than encoding/json
			}
			t.Fatalf("rejected %q: %v; encoding/json reads data %q", body, err, *want)
		}
		if !utf8.Valid(out) || !json.Valid(out) {
			t.Fatalf("reply %q is not valid UTF-8 JSON", out)
		}
		var got struct {
			Data   string `json:"data"`
			Length int    `json:"length"`
		}
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("reply %q: %v", out, err)
		}
		if got.Data != strings.ToUpper(*want) || got.Length != len(*want) {
			t.Fatalf("%q: got %q/%d, want %q/%d", body, got.Data, got.Length, strings.ToUpper(*want), len(*want))
		}
	})
}
