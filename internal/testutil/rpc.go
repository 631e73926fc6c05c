package testutil

// Test data for the runtime functions (PROTOCOL.md §3), shared by the tests
// of the runtime and of the origin's /call caller.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// RPCPayload builds a request body of about size bytes for fn: random bytes for
// echo, {"data":"..."} for transform, {"data":"...","rounds":1} for compute.
func RPCPayload(fn string, size int) []byte {
	rng := rand.New(rand.NewPCG(uint64(size), 42))
	letters := func(n int) string {
		const alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
		b := make([]byte, max(n, 0))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		return string(b)
	}
	switch fn {
	case fnEcho:
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	case fnTransform:
		return fmt.Appendf(nil, `{"data":"%s"}`, letters(size-len(`{"data":""}`)))
	default:
		return fmt.Appendf(nil, `{"data":"%s","rounds":1}`, letters(size-len(`{"data":"","rounds":1}`)))
	}
}

// CheckRPCReply verifies out as fn's reply to body against an independent
// computation with encoding/json, strings.ToUpper and an iterated
// crypto/sha256 loop.
func CheckRPCReply(tb testing.TB, fn string, body, out []byte) {
	tb.Helper()
	switch fn {
	case fnEcho:
		if !bytes.Equal(out, body) {
			tb.Fatalf("echo: got %d bytes %.40q, want the %d request bytes %.40q", len(out), out, len(body), body)
		}
	case fnTransform:
		var in struct {
			Data string `json:"data"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			tb.Fatalf("test body %.60q is not JSON: %v", body, err)
		}
		var got struct {
			Data   *string `json:"data"`
			Length *int    `json:"length"`
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil || got.Data == nil || got.Length == nil {
			tb.Fatalf("transform reply %.80q: not {data,length} JSON (err %v)", out, err)
		}
		if want := strings.ToUpper(in.Data); *got.Data != want {
			tb.Fatalf("transform data: got %.60q, want %.60q", *got.Data, want)
		}
		if *got.Length != len(in.Data) {
			tb.Fatalf("transform length: got %d, want %d", *got.Length, len(in.Data))
		}
	case fnCompute:
		var in struct {
			Data   string `json:"data"`
			Rounds int    `json:"rounds"`
		}
		if err := json.Unmarshal(body, &in); err != nil {
			tb.Fatalf("test body %.60q is not JSON: %v", body, err)
		}
		h := sha256.Sum256([]byte(in.Data))
		for i := 1; i < in.Rounds; i++ {
			h = sha256.Sum256(h[:])
		}
		want := `{"digest":"` + hex.EncodeToString(h[:]) + `"}`
		if string(out) != want {
			tb.Fatalf("compute(%d rounds): got %s, want %s", in.Rounds, out, want)
		}
	default:
		tb.Fatalf("unknown fn %q", fn)
	}
}

// RPCValidCase is a request that must succeed.
type RPCValidCase struct {
	Name, Fn string
	Body     []byte
}

// RPCValidCases are the well-formed requests every path is checked with.
func RPCValidCases() []RPCValidCase {
	return []RPCValidCase{
		{"echo-empty", fnEcho, []byte{}},
		{"echo-text", fnEcho, []byte("hello, runtime")},
		{"echo-binary-1KB", fnEcho, RPCPayload(fnEcho, 1024)},
		{"echo-100KB", fnEcho, RPCPayload(fnEcho, 100<<10)},
		{"transform-empty", fnTransform, []byte(`{"data":""}`)},
		{"transform-ascii", fnTransform, []byte(`{"data":"hello World 123"}`)},
		{"transform-unicode", fnTransform, []byte(`{"data":"ǆ é ß straße ﬁ ı ǅ Ω ω"}`)},
		{"transform-escapes", fnTransform, []byte(`{"data":"q\" b\\ \n\t\r\b\f \u0000 \u001f <>& \/"}`)},
		{"transform-surrogates", fnTransform, []byte(`{"data":"\ud83d\ude00 lone \ud800 x \udc00"}`)},
		{"transform-line-separators", fnTransform, []byte("{\"data\":\"a\u2028b\u2029c\"}")},
		{"transform-extra-members", fnTransform, []byte(` { "x" : [1, {"y": null}, -2.5e3, true, "s"] , "data" : "mixed Case" , "z": false } `)},
		{"transform-escaped-key", fnTransform, []byte(`{"d\u0061ta":"key with escape"}`)},
		{"transform-10KB", fnTransform, RPCPayload(fnTransform, 10<<10)},
		{"transform-100KB", fnTransform, RPCPayload(fnTransform, 100<<10)},
		{"compute-1", fnCompute, []byte(`{"data":"abc","rounds":1}`)},
		{"compute-2", fnCompute, []byte(`{"rounds":2,"data":"abc"}`)},
		{"compute-1000", fnCompute, []byte(`{"data":"pipeline","rounds":1000}`)},
		{"compute-empty-data", fnCompute, []byte(`{"data":"","rounds":3}`)},
		{"compute-unicode", fnCompute, []byte(`{"data":"ǆé\u00df","rounds":5}`)},
		{"compute-100KB", fnCompute, RPCPayload(fnCompute, 100<<10)},
	}
}

// RPCBadCase is a request that must fail with status Code.
type RPCBadCase struct {
	Name, Fn string
	Body     []byte
	Code     int
	Msg      string // a substring of the error message
}

// RPCBadCases are requests every path must reject with a typed error. The
// limits they assume are RPCTestMaxPayload and RPCTestMaxRounds.
func RPCBadCases() []RPCBadCase {
	return []RPCBadCase{
		{"transform-empty-body", fnTransform, nil, 400, "empty body"},
		{"transform-not-json", fnTransform, []byte(`data=x`), 400, "JSON object"},
		{"transform-array", fnTransform, []byte(`["data"]`), 400, "JSON object"},
		{"transform-truncated", fnTransform, []byte(`{"data":"abc`), 400, "invalid JSON"},
		{"transform-trailing", fnTransform, []byte(`{"data":"abc"} x`), 400, "after the JSON object"},
		{"transform-missing-data", fnTransform, []byte(`{"date":"x"}`), 400, `"data" is required`},
		{"transform-null-data", fnTransform, []byte(`{"data":null}`), 400, `"data" is required`},
		{"transform-number-data", fnTransform, []byte(`{"data":42}`), 400, `"data" must be a string`},
		{"transform-bad-escape", fnTransform, []byte(`{"data":"\x"}`), 400, "escape"},
		{"transform-raw-newline", fnTransform, []byte("{\"data\":\"a\nb\"}"), 400, "control character"},
		{"transform-bad-literal", fnTransform, []byte(`{"data":"a","b":tru}`), 400, "invalid JSON"},
		{"compute-missing-rounds", fnCompute, []byte(`{"data":"x"}`), 400, `"rounds" is required`},
		{"compute-missing-data", fnCompute, []byte(`{"rounds":1}`), 400, `"data" is required`},
		{"compute-zero-rounds", fnCompute, []byte(`{"data":"x","rounds":0}`), 400, "between 1 and"},
		{"compute-negative-rounds", fnCompute, []byte(`{"data":"x","rounds":-3}`), 400, "between 1 and"},
		{"compute-too-many-rounds", fnCompute, []byte(`{"data":"x","rounds":1001}`), 400, "between 1 and 1000"},
		{"compute-huge-rounds", fnCompute, []byte(`{"data":"x","rounds":99999999999999999999}`), 400, "between 1 and"},
		{"compute-fraction-rounds", fnCompute, []byte(`{"data":"x","rounds":1.5}`), 400, "integer"},
		{"compute-exponent-rounds", fnCompute, []byte(`{"data":"x","rounds":1e2}`), 400, "integer"},
		{"compute-string-rounds", fnCompute, []byte(`{"data":"x","rounds":"3"}`), 400, "integer"},
		{"echo-too-large", fnEcho, make([]byte, RPCTestMaxPayload+1), 413, "limit"},
		{"transform-too-large", fnTransform, RPCPayload(fnTransform, RPCTestMaxPayload+1), 413, "limit"},
	}
}

// Limits RPCBadCases assume: small enough to test cheaply.
const (
	RPCTestMaxPayload = 200 << 10
	RPCTestMaxRounds  = 1000
)

// The built-in function names (runtime.FnEcho ...), spelled here so that
// tests of packages the runtime must not be imported by can use the cases.
const (
	fnEcho      = "echo"
	fnTransform = "transform"
	fnCompute   = "compute"
)
