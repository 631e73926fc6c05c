package wire

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

// want is the comparable form of a Frame for tests.
type want struct {
	typ, id, job, code, message, origin, version, state, executor, enc, body, headers string
	status, attempt                                                                   int
	truncated, duplicate, hasTiming                                                   bool
	timing                                                                            Timing
}

func view(f *Frame) want {
	body, _ := f.DecodeBody()
	return want{string(f.Type), string(f.ID), string(f.Job), string(f.Code), string(f.Message), string(f.Origin),
		string(f.Version), string(f.State), string(f.Executor), string(f.BodyEncoding), string(body),
		string(f.RawHeaders), f.Status, f.Attempt, f.Truncated, f.Duplicate, f.HasTiming, f.Timing}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want want
	}{
		{"hello", `{"type":"hello","origin":"o1","version":"0.1.0"}`,
			want{typ: "hello", origin: "o1", version: "0.1.0"}},
		{"enqueued", `{"type":"enqueued","id":"c1.2.3","job":"j"}`,
			want{typ: "enqueued", id: "c1.2.3", job: "j"}},
		{"duplicate", `{"type":"enqueued","id":"a","job":"j","duplicate":true}`,
			want{typ: "enqueued", id: "a", job: "j", duplicate: true}},
		{"pending", `{"type":"pending","id":"g","job":"j","state":"scheduled"}`,
			want{typ: "pending", id: "g", job: "j", state: "scheduled"}},
		{"result", `{"type":"result","id":"c0.0.1","job":"x","status":201,"headers":{"a":"b"},
			"body":"he said \"hi\" \\ {}","body_encoding":"utf8","truncated":true,"attempt":2,"executor":"e",
			"timing":{"enqueue_ms":0.21,"queue_ms":0.08,"fetch_ms":14.3,"total_ms":1.49e1,"delay_ms":5,"extra":{"x":1}}}`,
			want{typ: "result", id: "c0.0.1", job: "x", status: 201, headers: `{"a":"b"}`, body: `he said "hi" \ {}`,
				enc: "utf8", truncated: true, attempt: 2, executor: "e", hasTiming: true,
				timing: Timing{EnqueueMS: 0.21, QueueMS: 0.08, FetchMS: 14.3, TotalMS: 14.9, DelayMS: 5}}},
		{"base64 body", `{"type":"result","id":"b","body":"/wA=","body_encoding":"base64","status":200}`,
			want{typ: "result", id: "b", body: "\xff\x00", enc: "base64", status: 200}},
		{"error with escapes", `{ "type" : "error", "id":"c1.1.1", "code":"invalid_url", "message":"bad \u00e9 \"url\"" }`,
			want{typ: "error", id: "c1.1.1", code: "invalid_url", message: `bad é "url"`}},
		{"null timing", `{"type":"result","id":"c1.1.1","timing":null,"status":200}`,
			want{typ: "result", id: "c1.1.1", status: 200}},
		{"float status", `{"status":2.01e2,"attempt":12345678901}`, want{status: 201, attempt: 12345678901}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var f Frame
			if err := Parse([]byte(tc.in), &f); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := view(&f); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeHeaders(t *testing.T) {
	var f Frame
	if err := Parse([]byte(`{"headers":{"content-type":"text/plain","x":"\u00e9"}}`), &f); err != nil {
		t.Fatal(err)
	}
	h, err := f.DecodeHeaders()
	if err != nil || h["content-type"] != "text/plain" || h["x"] != "é" || len(h) != 2 {
		t.Fatalf("got %v %v", h, err)
	}
	if err := Parse([]byte(`{"headers":[1]}`), &f); err != nil {
		t.Fatal(err)
	}
	if _, err := f.DecodeHeaders(); err == nil {
		t.Fatal("headers that are not an object: want an error")
	}
}

func TestParseRejects(t *testing.T) {
	for _, in := range []string{``, `[]`, `{`, `{"type":}`, `{"type":"x"`, `{"type":"x",}`, `{"a":tru}`,
		`{"a":"unterminated}`, `{"a":[1,2}`, `{"a":1} x`, "{\"a\":\"ctl\x01\"}", `{"status":"200"}`,
		`{"duplicate":1}`} {
		var f Frame
		if err := Parse([]byte(in), &f); err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", in)
		}
	}
}

// FuzzParse checks the decoder against encoding/json: for any JSON object,
// it reads the same values for the string members it knows, and rejects an
// object only when one of its members holds a value of the wrong type.
func FuzzParse(f *testing.F) {
	f.Add(`{"type":"result","id":"c1.2.3","status":200,"body":"x","timing":{"fetch_ms":1.5}}`)
	f.Add(`{"type":"error","id":"","code":"bad_request","message":"\u0041\n"}`)
	f.Add(`{"nested":[{"a":[[]]},"s",1e5,-0.5,true,null],"type":"enqueued"}`)
	f.Add(`{"type":"a","type":"b","status":1,"status":2,"duplicate":true}`)
	strs := []string{"type", "id", "job", "code", "message", "origin", "version", "state", "executor", "body_encoding", "body"}
	f.Fuzz(func(t *testing.T, in string) {
		var m map[string]any
		if json.Unmarshal([]byte(in), &m) != nil || m == nil || !utf8.ValidString(in) {
			return // not an object: the decoder may be more lenient about what it skips
		}
		var fr Frame
		err := Parse([]byte(in), &fr)
		for _, k := range strs {
			if v, ok := m[k]; ok {
				if _, isStr := v.(string); !isStr {
					return // rejected or not, both are fine for a frame the origin never sends
				}
			}
		}
		for _, k := range []string{"status", "attempt"} {
			if v, ok := m[k]; ok {
				if _, isNum := v.(float64); !isNum {
					return
				}
			}
		}
		for _, k := range []string{"truncated", "duplicate"} {
			if v, ok := m[k]; ok && v != nil {
				if _, isBool := v.(bool); !isBool {
					return
				}
			}
		}
		if err != nil {
			t.Fatalf("Parse(%q): %v, but encoding/json reads it", in, err)
		}
		got := map[string][]byte{"type": fr.Type, "id": fr.ID, "job": fr.Job, "code": fr.Code, "message": fr.Message,
			"origin": fr.Origin, "version": fr.Version, "state": fr.State, "executor": fr.Executor,
			"body_encoding": fr.BodyEncoding}
		for k, g := range got {
			want, _ := m[k].(string)
			if string(g) != want {
				t.Fatalf("%s: got %q, want %q", k, g, want)
			}
		}
		if want, ok := m["body"].(string); ok && (len(fr.BodyEncoding) == 0 || string(fr.BodyEncoding) == EncodingUTF8) {
			if b, err := fr.DecodeBody(); err != nil || string(b) != want {
				t.Fatalf("body: got %q %v, want %q", b, err, want)
			}
		}
		if v, ok := m["status"].(float64); ok && fr.Status != int(v) {
			t.Fatalf("status: got %d, want %v", fr.Status, v)
		}
	})
}

func TestEncode(t *testing.T) {
	sf := StartFetch{ID: "c-1", URL: "http://127.0.0.1:8090/delay?ms=14", Key: "k1", DelayMS: 50,
		Headers: map[string]string{"accept": "text/plain"}, TimeoutMS: 1000}
	b, err := sf.Encode()
	if err != nil {
		t.Fatal(err)
	}
	const wantSF = `{"type":"start-fetch","id":"c-1","url":"http://127.0.0.1:8090/delay?ms=14","headers":{"accept":"text/plain"},"timeout_ms":1000,"key":"k1","delay_ms":50}`
	if string(b) != wantSF {
		t.Errorf("got  %s\nwant %s", b, wantSF)
	}
	suffix, err := sf.Suffix()
	if err != nil {
		t.Fatal(err)
	}
	if got := StartFetchPrefix + "c-1" + string(suffix); got != wantSF {
		t.Errorf("prefix+id+suffix: got %s", got)
	}
	for _, tc := range []struct {
		enc  interface{ Encode() ([]byte, error) }
		want string
	}{
		{&GetResult{ID: "g1", Key: "k"}, `{"type":"get-result","id":"g1","key":"k"}`},
		{&GetResult{ID: "g2", Job: "j"}, `{"type":"get-result","id":"g2","job":"j"}`},
		{&Cancel{ID: "x1", Job: "j"}, `{"type":"cancel","id":"x1","job":"j"}`},
	} {
		if b, err := tc.enc.Encode(); err != nil || string(b) != tc.want {
			t.Errorf("got %s %v, want %s", b, err, tc.want)
		}
	}
}

func TestValidID(t *testing.T) {
	long := make([]byte, 129)
	for i := range long {
		long[i] = 'a'
	}
	for in, want := range map[string]bool{"a": true, "": false, "é": false, "a b~": true, string(long): false, string(long[:128]): true} {
		if ValidID(in) != want {
			t.Errorf("ValidID(%q) = %v", in, !want)
		}
	}
}
