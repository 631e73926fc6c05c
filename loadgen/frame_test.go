package loadgen

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestParseFrame(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want frame
	}{
		{"hello", `{"type":"hello","origin":"o1","version":"0.1.0"}`,
			frame{typ: []byte("hello"), origin: []byte("o1"), version: []byte("0.1.0")}},
		{"enqueued", `{"type":"enqueued","id":"c1.2.3","job":"j"}`,
			frame{typ: []byte("enqueued"), id: []byte("c1.2.3")}},
		{"result", `{"type":"result","id":"c0.0.1","job":"x","status":201,"headers":{"a":"b","c":["d",{"e":null}]},
			"body":"he said \"hi\" \\ {}","body_encoding":"utf8","truncated":false,"attempt":1,"executor":"e",
			"timing":{"enqueue_ms":0.21,"queue_ms":0.08,"fetch_ms":14.3,"total_ms":1.49e1,"extra":{"x":1}}}`,
			frame{typ: []byte("result"), id: []byte("c0.0.1"), status: 201, hasTiming: true,
				timing: frameTiming{enqueue: 0.21, queue: 0.08, fetch: 14.3, total: 14.9}}},
		{"error with escapes", `{ "type" : "error", "id":"c1.1.1", "code":"invalid_url", "message":"bad \u00e9 \"url\"" }`,
			frame{typ: []byte("error"), id: []byte("c1.1.1"), code: []byte("invalid_url"), message: []byte(`bad é "url"`)}},
		{"null timing", `{"type":"result","id":"c1.1.1","timing":null,"status":200}`,
			frame{typ: []byte("result"), id: []byte("c1.1.1"), status: 200}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got frame
			if err := parseFrame([]byte(tc.in), &got); err != nil {
				t.Fatalf("parseFrame: %v", err)
			}
			if !frameEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func frameEqual(a, b frame) bool {
	return string(a.typ) == string(b.typ) && string(a.id) == string(b.id) && string(a.code) == string(b.code) &&
		string(a.message) == string(b.message) && string(a.origin) == string(b.origin) &&
		string(a.version) == string(b.version) && a.status == b.status && a.hasTiming == b.hasTiming && a.timing == b.timing
}

func TestParseFrameRejects(t *testing.T) {
	for _, in := range []string{``, `[]`, `{`, `{"type":}`, `{"type":"x"`, `{"type":"x",}`, `{"a":tru}`,
		`{"a":"unterminated}`, `{"a":[1,2}`, `{"a":1} x`, "{\"a\":\"ctl\x01\"}"} {
		var f frame
		if err := parseFrame([]byte(in), &f); err == nil {
			t.Errorf("parseFrame(%q) succeeded, want an error", in)
		}
	}
}

// FuzzParseFrame checks the scanner against encoding/json: for any JSON
// object, the scanner reads the same values for the keys it knows (matched
// exactly, as the origin writes them), and rejects an object only when one
// of those keys holds a value of the wrong type.
func FuzzParseFrame(f *testing.F) {
	f.Add(`{"type":"result","id":"c1.2.3","status":200,"body":"x","timing":{"fetch_ms":1.5}}`)
	f.Add(`{"type":"error","id":"","code":"bad_request","message":"\u0041\n"}`)
	f.Add(`{"nested":[{"a":[[]]},"s",1e5,-0.5,true,null],"type":"enqueued"}`)
	f.Add(`{"type":"a","type":"b","status":1,"status":2}`)
	f.Fuzz(func(t *testing.T, in string) {
		var m map[string]any
		if json.Unmarshal([]byte(in), &m) != nil || m == nil || !utf8.ValidString(in) {
			return // not an object: the scanner may be more lenient about what it skips
		}
		var fr frame
		err := parseFrame([]byte(in), &fr)
		wantErr := false
		for _, k := range []string{"type", "id", "code", "message", "origin", "version"} {
			if v, ok := m[k]; ok {
				if _, isStr := v.(string); !isStr {
					wantErr = true
				}
			}
		}
		if v, ok := m["status"]; ok {
			if _, isNum := v.(float64); !isNum {
				wantErr = true
			}
		}
		if wantErr {
			return // rejected or not, both are fine for a frame the origin never sends
		}
		if err != nil {
			t.Fatalf("parseFrame(%q): %v, but encoding/json reads it", in, err)
		}
		for k, got := range map[string][]byte{"type": fr.typ, "id": fr.id, "code": fr.code, "message": fr.message,
			"origin": fr.origin, "version": fr.version} {
			want, _ := m[k].(string)
			if string(got) != want {
				t.Fatalf("%s: got %q, want %q", k, got, want)
			}
		}
		if v, ok := m["status"].(float64); ok && fr.status != int(v) {
			t.Fatalf("status: got %d, want %v", fr.status, v)
		}
	})
}

func TestRequestID(t *testing.T) {
	b := appendRequestID(nil, 3, 41, 1234567)
	if string(b) != "c3.41.1234567" {
		t.Fatalf("got %q", b)
	}
	id, err := parseRequestID(b)
	if err != nil || id != (requestID{3, 41, 1234567}) {
		t.Fatalf("parse: %+v %v", id, err)
	}
	for _, bad := range []string{"", "c1.2", "c1..2.3", "x1.2.3", "c1.2.3.4", "c1.2.", "c.1.2", "c1.2.99999999999999999999"} {
		if _, err := parseRequestID([]byte(bad)); err == nil {
			t.Errorf("parseRequestID(%q) succeeded", bad)
		}
	}
}
