package rpc

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startNATS starts an embedded NATS server (no JetStream) on a free loopback
// port, stopped by tb.Cleanup.
func startNATS(tb testing.TB) *server.Server {
	tb.Helper()
	ns, err := server.NewServer(&server.Options{
		Host:       "127.0.0.1",
		Port:       -1,
		NoLog:      true,
		NoSigs:     true,
		StoreDir:   tb.TempDir(),
		MaxPayload: 8 << 20,
	})
	if err != nil {
		tb.Fatalf("new nats server: %v", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		tb.Fatal("nats server not ready within 10s")
	}
	tb.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// connect opens a NATS connection to ns, over TCP loopback or (inProcess)
// through an in-memory pipe, closed by tb.Cleanup.
func connect(tb testing.TB, ns *server.Server, inProcess bool) *nats.Conn {
	tb.Helper()
	url, opts := ns.ClientURL(), []nats.Option{nats.Name(tb.Name())}
	if inProcess {
		url, opts = "", append(opts, nats.InProcessServer(ns))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatalf("connect to nats: %v", err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// startService runs a runtime Service on nc, stopped by tb.Cleanup.
func startService(tb testing.TB, nc *nats.Conn, cfg ServiceConfig) *Service {
	tb.Helper()
	s, err := NewService(nc, cfg)
	if err != nil {
		tb.Fatalf("new service: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("stop service: %v", err)
		}
	})
	return s
}

// payload builds a request body of about size bytes for fn: random bytes for
// echo, {"data":"..."} for transform, {"data":"...","rounds":1} for compute.
func payload(fn string, size int) []byte {
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
	case FnEcho:
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	case FnTransform:
		return fmt.Appendf(nil, `{"data":"%s"}`, letters(size-len(`{"data":""}`)))
	default:
		return fmt.Appendf(nil, `{"data":"%s","rounds":1}`, letters(size-len(`{"data":"","rounds":1}`)))
	}
}

// checkReply verifies out as fn's reply to body against an independent
// computation with encoding/json, strings.ToUpper and an iterated
// crypto/sha256 loop.
func checkReply(tb testing.TB, fn string, body, out []byte) {
	tb.Helper()
	switch fn {
	case FnEcho:
		if !bytes.Equal(out, body) {
			tb.Fatalf("echo: got %d bytes %.40q, want the %d request bytes %.40q", len(out), out, len(body), body)
		}
	case FnTransform:
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
	case FnCompute:
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

// validCase is a request that must succeed.
type validCase struct {
	name, fn string
	body     []byte
}

// validCases are the well-formed requests every path is checked with.
func validCases() []validCase {
	return []validCase{
		{"echo-empty", FnEcho, []byte{}},
		{"echo-text", FnEcho, []byte("hello, runtime")},
		{"echo-binary-1KB", FnEcho, payload(FnEcho, 1024)},
		{"echo-100KB", FnEcho, payload(FnEcho, 100<<10)},
		{"transform-empty", FnTransform, []byte(`{"data":""}`)},
		{"transform-ascii", FnTransform, []byte(`{"data":"hello World 123"}`)},
		{"transform-unicode", FnTransform, []byte(`{"data":"ǆ é ß straße ﬁ ı ǅ Ω ω"}`)},
		{"transform-escapes", FnTransform, []byte(`{"data":"q\" b\\ \n\t\r\b\f \u0000 \u001f <>& \/"}`)},
		{"transform-surrogates", FnTransform, []byte(`{"data":"\ud83d\ude00 lone \ud800 x \udc00"}`)},
		{"transform-line-separators", FnTransform, []byte("{\"data\":\"a\u2028b\u2029c\"}")},
		{"transform-extra-members", FnTransform, []byte(` { "x" : [1, {"y": null}, -2.5e3, true, "s"] , "data" : "mixed Case" , "z": false } `)},
		{"transform-escaped-key", FnTransform, []byte(`{"d\u0061ta":"key with escape"}`)},
		{"transform-10KB", FnTransform, payload(FnTransform, 10<<10)},
		{"transform-100KB", FnTransform, payload(FnTransform, 100<<10)},
		{"compute-1", FnCompute, []byte(`{"data":"abc","rounds":1}`)},
		{"compute-2", FnCompute, []byte(`{"rounds":2,"data":"abc"}`)},
		{"compute-1000", FnCompute, []byte(`{"data":"pipeline","rounds":1000}`)},
		{"compute-empty-data", FnCompute, []byte(`{"data":"","rounds":3}`)},
		{"compute-unicode", FnCompute, []byte(`{"data":"ǆé\u00df","rounds":5}`)},
		{"compute-100KB", FnCompute, payload(FnCompute, 100<<10)},
	}
}

// badCase is a request that must fail with code.
type badCase struct {
	name, fn string
	body     []byte
	code     int
	msg      string // a substring of the error message
}

// badCases are requests every path must reject with a typed error. The
// limits they assume are testLimits.
func badCases() []badCase {
	return []badCase{
		{"transform-empty-body", FnTransform, nil, 400, "empty body"},
		{"transform-not-json", FnTransform, []byte(`data=x`), 400, "JSON object"},
		{"transform-array", FnTransform, []byte(`["data"]`), 400, "JSON object"},
		{"transform-truncated", FnTransform, []byte(`{"data":"abc`), 400, "invalid JSON"},
		{"transform-trailing", FnTransform, []byte(`{"data":"abc"} x`), 400, "after the JSON object"},
		{"transform-missing-data", FnTransform, []byte(`{"date":"x"}`), 400, `"data" is required`},
		{"transform-null-data", FnTransform, []byte(`{"data":null}`), 400, `"data" is required`},
		{"transform-number-data", FnTransform, []byte(`{"data":42}`), 400, `"data" must be a string`},
		{"transform-bad-escape", FnTransform, []byte(`{"data":"\x"}`), 400, "escape"},
		{"transform-raw-newline", FnTransform, []byte("{\"data\":\"a\nb\"}"), 400, "control character"},
		{"transform-bad-literal", FnTransform, []byte(`{"data":"a","b":tru}`), 400, "invalid JSON"},
		{"compute-missing-rounds", FnCompute, []byte(`{"data":"x"}`), 400, `"rounds" is required`},
		{"compute-missing-data", FnCompute, []byte(`{"rounds":1}`), 400, `"data" is required`},
		{"compute-zero-rounds", FnCompute, []byte(`{"data":"x","rounds":0}`), 400, "between 1 and"},
		{"compute-negative-rounds", FnCompute, []byte(`{"data":"x","rounds":-3}`), 400, "between 1 and"},
		{"compute-too-many-rounds", FnCompute, []byte(`{"data":"x","rounds":1001}`), 400, "between 1 and 1000"},
		{"compute-huge-rounds", FnCompute, []byte(`{"data":"x","rounds":99999999999999999999}`), 400, "between 1 and"},
		{"compute-fraction-rounds", FnCompute, []byte(`{"data":"x","rounds":1.5}`), 400, "integer"},
		{"compute-exponent-rounds", FnCompute, []byte(`{"data":"x","rounds":1e2}`), 400, "integer"},
		{"compute-string-rounds", FnCompute, []byte(`{"data":"x","rounds":"3"}`), 400, "integer"},
		{"echo-too-large", FnEcho, make([]byte, testLimits.MaxPayload+1), 413, "limit"},
		{"transform-too-large", FnTransform, payload(FnTransform, testLimits.MaxPayload+1), 413, "limit"},
	}
}

// testLimits are small enough to test cheaply.
var testLimits = Limits{MaxPayload: 200 << 10, MaxRounds: 1000}
