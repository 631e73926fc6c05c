package broker

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func sampleJob() *Job {
	return &Job{
		ID: "j1", Origin: "o1", ClientID: "c-1", URL: "http://127.0.0.1:8090/delay?ms=14", Method: "POST",
		Headers: map[string]string{"accept": "text/plain", "x-a": ""}, Body: []byte{0, 1, 0xff},
		TimeoutMS: 10000, Retry: true, ReceivedAt: 1764000000123456789, BulkLane: true,
		Continuation: Continuation{Name: "ws.result", State: json.RawMessage(`{"s":"abc"}`)},
	}
}

func sampleResult() *Result {
	return &Result{
		JobID: "j1", Origin: "o1", ClientID: "c-1", Status: 503, Headers: map[string]string{"content-type": "text/plain"},
		Body: []byte("héllo"), Truncated: true, Attempt: 2, Executor: "e1",
		ReceivedAt: 1, StoredAt: 2, PickedAt: 3, FetchNanos: -4,
		Continuation: Continuation{Name: "n", State: json.RawMessage(`[1]`)},
		Attempts:     4, WaitedNanos: 2_000_000_123,
	}
}

// TestResultVersion1StillDecodes: results written before attempts and
// waited_ns existed (version 1: the same fields without the last two)
// decode, with both 0.
func TestResultOptionalFieldsCostNothingWhenZero(t *testing.T) {
	r := sampleResult()
	r.Attempts, r.WaitedNanos = 0, 0
	plain, _ := r.Encode()
	r.Attempts, r.WaitedNanos = 2, 1500
	tagged, _ := r.Encode()
	if len(tagged) <= len(plain) || !bytes.Equal(tagged[:len(plain)], plain) {
		t.Fatalf("attempts and waited time should follow the fixed fields: %x vs %x", tagged, plain)
	}
	got, err := DecodeResult(tagged)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("tagged result: got %+v, %v; want %+v", got, err, r)
	}
	bad := append([]byte{}, plain...)
	bad[1] = 3
	if _, err := DecodeResult(bad); err == nil {
		t.Error("unknown version accepted")
	}
}

func TestCodecRoundTrip(t *testing.T) {
	j := sampleJob()
	data, _ := j.Encode()
	got, err := DecodeJob(data)
	if err != nil || !reflect.DeepEqual(got, j) {
		t.Fatalf("job round trip: got %+v, %v; want %+v", got, err, j)
	}
	r := sampleResult()
	for _, withErr := range []bool{false, true} {
		if withErr {
			r.Error = &Error{Code: CodeTimeout, Message: "slow"}
		}
		data, _ := r.Encode()
		got, err := DecodeResult(data)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("result round trip: got %+v, %v; want %+v", got, err, r)
		}
	}
	// Empty maps and slices come back as nil, which is what JSON omitempty gives too.
	empty := &Job{ID: "x", Origin: "o"}
	data, _ = empty.Encode()
	if got, err := DecodeJob(data); err != nil || !reflect.DeepEqual(got, empty) {
		t.Fatalf("empty job: %+v %v", got, err)
	}
}

func TestDecodeAcceptsJSONFromOlderVersions(t *testing.T) {
	j := sampleJob()
	data, _ := json.Marshal(j)
	if got, err := DecodeJob(data); err != nil || !reflect.DeepEqual(got, j) {
		t.Fatalf("json job: %+v %v", got, err)
	}
	r := sampleResult()
	data, _ = json.Marshal(r)
	if got, err := DecodeResult(data); err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("json result: %+v %v", got, err)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	good, _ := sampleJob().Encode()
	res, _ := sampleResult().Encode()
	for name, data := range map[string][]byte{
		"empty":         nil,
		"wrong magic":   append([]byte{'X'}, good[1:]...),
		"wrong version": append([]byte{'J', 9}, good[2:]...),
		"truncated":     good[:len(good)-3],
		"trailing":      append(append([]byte{}, good...), 0),
		"result as job": res,
		"huge length":   {'J', 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad json":      []byte(`{"id":`),
		"missing id":    func() []byte { b, _ := (&Job{Origin: "o"}).Encode(); return b }(),
	} {
		if _, err := DecodeJob(data); err == nil {
			t.Errorf("%s: decoded, want an error", name)
		}
	}
	if _, err := DecodeResult(good); err == nil {
		t.Error("job decoded as a result")
	}
}

func FuzzDecode(f *testing.F) {
	j, _ := sampleJob().Encode()
	r, _ := sampleResult().Encode()
	f.Add(j)
	f.Add(r)
	f.Add([]byte(`{"id":"a","origin":"b"}`))
	f.Add([]byte{'J', 1, 0x80})
	f.Fuzz(func(t *testing.T, data []byte) {
		if job, err := DecodeJob(data); err == nil {
			// Whatever decodes re-encodes to something that decodes the same.
			again, _ := job.Encode()
			back, err := DecodeJob(again)
			if err != nil || !reflect.DeepEqual(normJob(back), normJob(job)) {
				t.Fatalf("job does not round-trip: %+v vs %+v (%v)", job, back, err)
			}
		}
		if res, err := DecodeResult(data); err == nil {
			again, _ := res.Encode()
			back, err := DecodeResult(again)
			if err != nil || !reflect.DeepEqual(normResult(back), normResult(res)) {
				t.Fatalf("result does not round-trip: %+v vs %+v (%v)", res, back, err)
			}
		}
	})
}

// normJob maps the empty forms JSON may produce (empty map, empty slice) to nil.
func normJob(j *Job) *Job {
	c := *j
	if len(c.Headers) == 0 {
		c.Headers = nil
	}
	if len(c.Body) == 0 {
		c.Body = nil
	}
	if len(c.Continuation.State) == 0 {
		c.Continuation.State = nil
	}
	return &c
}

func normResult(r *Result) *Result {
	c := *r
	if len(c.Headers) == 0 {
		c.Headers = nil
	}
	if len(c.Body) == 0 {
		c.Body = nil
	}
	if len(c.Continuation.State) == 0 {
		c.Continuation.State = nil
	}
	return &c
}

func BenchmarkCodec(b *testing.B) {
	j := sampleJob()
	r := sampleResult()
	r.Body = []byte(strings.Repeat("a", 1024))
	b.Run("job-binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, _ := j.Encode()
			_, _ = DecodeJob(data)
		}
	})
	b.Run("job-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, _ := json.Marshal(j)
			_, _ = DecodeJob(data)
		}
	})
	b.Run("result-binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, _ := r.Encode()
			_, _ = DecodeResult(data)
		}
	})
	b.Run("result-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			data, _ := json.Marshal(r)
			_, _ = DecodeResult(data)
		}
	})
}

func TestCodecOptionalTail(t *testing.T) {
	j := &Job{ID: "j", Origin: "o", URL: "http://x/", Method: "GET", DelayMS: 2000}
	got, err := DecodeJob(encodeJob(j))
	if err != nil || got.DelayMS != 2000 {
		t.Fatalf("job delay: %v %+v", err, got)
	}
	// A message without the tail (an older writer) decodes with zero.
	j.DelayMS = 0
	if got, err := DecodeJob(encodeJob(j)); err != nil || got.DelayMS != 0 {
		t.Fatalf("no tail: %v %+v", err, got)
	}
	// An unknown tag (a newer writer) is skipped; a truncated tail fails.
	data := append(encodeJob(j), 99, 4)
	if _, err := DecodeJob(data); err != nil {
		t.Fatalf("unknown tag: %v", err)
	}
	if _, err := DecodeJob(append(encodeJob(j), 99)); err == nil {
		t.Fatal("truncated tail decoded")
	}
	r := &Result{JobID: "j", DelayMS: 7}
	if got, err := DecodeResult(encodeResult(r)); err != nil || got.DelayMS != 7 {
		t.Fatalf("result delay: %v %+v", err, got)
	}
}

func TestKeyJobID(t *testing.T) {
	a, b := KeyJobID("order-1"), KeyJobID("order-2")
	if a == b || a != KeyJobID("order-1") || len(a) != 27 || a[0] != 'k' {
		t.Fatalf("KeyJobID: %q %q", a, b)
	}
	if err := ValidateToken("job", a); err != nil {
		t.Fatalf("KeyJobID %q is not a subject token: %v", a, err)
	}
}
