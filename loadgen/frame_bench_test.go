package loadgen

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/client/wire"
)

// benchFrame mirrors the origin's outgoing frames (origin/frames.go) so that
// the benchmark frames are encoded exactly as the origin encodes them: the
// same field order, and encoding/json's escaping of bodies.
type benchFrame struct {
	Type         string            `json:"type"`
	ID           string            `json:"id"`
	Job          string            `json:"job,omitempty"`
	Status       int               `json:"status,omitempty"`
	Headers      map[string]string `json:"headers,omitempty"`
	Body         *string           `json:"body,omitempty"`
	BodyEncoding string            `json:"body_encoding,omitempty"`
	Truncated    *bool             `json:"truncated,omitempty"`
	Attempt      int               `json:"attempt,omitempty"`
	Executor     string            `json:"executor,omitempty"`
	Code         string            `json:"code,omitempty"`
	Message      string            `json:"message,omitempty"`
	Timing       *benchTiming      `json:"timing,omitempty"`
}

type benchTiming struct {
	EnqueueMS float64 `json:"enqueue_ms"`
	QueueMS   float64 `json:"queue_ms"`
	FetchMS   float64 `json:"fetch_ms"`
	TotalMS   float64 `json:"total_ms"`
}

// benchFrames are what a loadgen connection reads: an enqueued frame, a
// result with a 100 B body (the test target's /bytes?n=100), a result with a
// 10 KB JSON body (quotes and <> escaped, as a proxied API reply would be),
// and an error frame.
func benchFrames(tb testing.TB) []struct {
	name string
	b    []byte
} {
	const id, job, exec = "c3.41.1234567", "QxP3WJbXoOqcl4Wf2ZAdgU", "worker-1-HnFJ8t"
	small := make([]byte, 100)
	for i := range small {
		small[i] = 'a' + byte(i%26)
	}
	smallBody := string(small)
	var big strings.Builder
	for i := 0; big.Len() < 10<<10; i++ {
		big.WriteString(`{"id":` + strings.Repeat("7", 1+i%6) + `,"name":"item <b>` + string(rune('A'+i%26)) +
			`</b>","tags":["a","b & c"],"price":12.5,"note":"say \"hi\"\n"},` + "\n")
	}
	bigBody := big.String()
	no := false
	timing := &benchTiming{EnqueueMS: 0.213, QueueMS: 0.082, FetchMS: 14.31, TotalMS: 14.93}
	headers := func(n int) map[string]string {
		return map[string]string{"content-type": "text/plain; charset=utf-8", "content-length": strconv.Itoa(n),
			"date": "Mon, 02 Mar 2026 10:04:05 GMT"}
	}
	frames := []struct {
		name string
		f    benchFrame
	}{
		{"enqueued", benchFrame{Type: wire.TypeEnqueued, ID: id, Job: job}},
		{"result-100B", benchFrame{Type: wire.TypeResult, ID: id, Job: job, Status: 200, Headers: headers(len(smallBody)),
			Body: &smallBody, BodyEncoding: "utf8", Truncated: &no, Attempt: 1, Executor: exec, Timing: timing}},
		{"result-10KB", benchFrame{Type: wire.TypeResult, ID: id, Job: job, Status: 200, Headers: headers(len(bigBody)),
			Body: &bigBody, BodyEncoding: "utf8", Truncated: &no, Attempt: 1, Executor: exec, Timing: timing}},
		{"error", benchFrame{Type: wire.TypeError, ID: id, Job: job, Code: "fetch_failed",
			Message: "dial tcp 127.0.0.1:1: connect: connection refused"}},
	}
	out := make([]struct {
		name string
		b    []byte
	}, len(frames))
	for i, fr := range frames {
		b, err := json.Marshal(fr.f)
		if err != nil {
			tb.Fatal(err)
		}
		out[i].name, out[i].b = fr.name, b
	}
	return out
}

// stdFrame is what encoding/json would decode a frame into in place of the
// scanner: the fields of wire.Frame the load generator reads, with timing a
// pointer so that a missing or null timing is told apart as
// wire.Frame.HasTiming does.
type stdFrame struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Origin  string `json:"origin"`
	Version string `json:"version"`
	Status  int    `json:"status"`
	Timing  *struct {
		Enqueue float64 `json:"enqueue_ms"`
		Queue   float64 `json:"queue_ms"`
		Fetch   float64 `json:"fetch_ms"`
		Total   float64 `json:"total_ms"`
	} `json:"timing"`
}

// BenchmarkFrameDecode is the A/B behind the choice of a hand-written frame
// scanner: each frame a loadgen connection reads is decoded the way
// client.readLoop and client.handle use it (all fields into a reused value,
// then the request id parsed), once by wire.Parse and once by encoding/json
// into the equivalent struct. Compare with benchstat -col /impl.
func BenchmarkFrameDecode(b *testing.B) {
	for _, fr := range benchFrames(b) {
		var want wire.Frame
		if err := wire.Parse(fr.b, &want); err != nil {
			b.Fatalf("%s: %v", fr.name, err)
		}
		b.Run("frame="+fr.name+"/impl=scanner", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(fr.b)))
			var f wire.Frame
			for b.Loop() {
				if err := wire.Parse(fr.b, &f); err != nil {
					b.Fatal(err)
				}
				if _, err := parseRequestID(f.ID); err != nil {
					b.Fatal(err)
				}
			}
			if !frameEqual(f, want) {
				b.Fatalf("got %+v, want %+v", f, want)
			}
		})
		b.Run("frame="+fr.name+"/impl=encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(fr.b)))
			var (
				f  stdFrame
				id []byte // reused: parseRequestID takes bytes, and a conversion would allocate
			)
			for b.Loop() {
				f = stdFrame{} // as wire.Parse resets: no field survives from the last frame
				if err := json.Unmarshal(fr.b, &f); err != nil {
					b.Fatal(err)
				}
				id = append(id[:0], f.ID...)
				if _, err := parseRequestID(id); err != nil {
					b.Fatal(err)
				}
			}
			got := wire.Frame{Type: []byte(f.Type), ID: []byte(f.ID), Code: []byte(f.Code), Message: []byte(f.Message),
				Origin: []byte(f.Origin), Version: []byte(f.Version), Status: f.Status, HasTiming: f.Timing != nil}
			if f.Timing != nil {
				got.Timing = wire.Timing{EnqueueMS: f.Timing.Enqueue, QueueMS: f.Timing.Queue, FetchMS: f.Timing.Fetch, TotalMS: f.Timing.Total}
			}
			if !frameEqual(got, want) {
				b.Fatalf("encoding/json read %+v, scanner %+v: not the same work", got, want)
			}
		})
	}
}

// frameEqual compares the members of two frames that the load generator
// reads.
func frameEqual(a, b wire.Frame) bool {
	return string(a.Type) == string(b.Type) && string(a.ID) == string(b.ID) && string(a.Code) == string(b.Code) &&
		string(a.Message) == string(b.Message) && string(a.Origin) == string(b.Origin) &&
		string(a.Version) == string(b.Version) && a.Status == b.Status && a.HasTiming == b.HasTiming && a.Timing == b.Timing
}
