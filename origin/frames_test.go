package origin

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/broker"
)

func TestParseFrame(t *testing.T) {
	long := strings.Repeat("x", 128)
	cases := []struct {
		name     string
		in       string
		wantCode broker.Code // "" means accepted
		wantID   string      // the id recovered (accepted or refused)
		wantType string
	}{
		{"start-fetch", `{"type":"start-fetch","id":"c-1","url":"http://a/"}`, "", "c-1", frameStartFetch},
		{"get-result", `{"type":"get-result","id":"g","job":"J"}`, "", "g", frameGetResult},
		{"id of 128 characters", `{"type":"start-fetch","id":"` + long + `"}`, "", long, frameStartFetch},
		{"id with space and punctuation", `{"type":"start-fetch","id":" ~!{}"}`, "", " ~!{}", frameStartFetch},
		{"keys are case-insensitive", `{"TYPE":"start-fetch","Id":"ci"}`, "", "ci", frameStartFetch},
		{"last duplicate key wins", `{"type":"start-fetch","id":"a","id":"b"}`, "", "b", frameStartFetch},
		{"unknown fields are ignored", `{"type":"start-fetch","id":"u","extra":{"deep":[1]}}`, "", "u", frameStartFetch},

		{"truncated JSON", `{"type":"start-fetch",`, broker.CodeBadRequest, "", ""},
		{"truncated JSON after the id", `{"type":"start-fetch","id":"lost",`, broker.CodeBadRequest, "", ""},
		{"empty frame", ``, broker.CodeBadRequest, "", ""},
		{"array", `[1,2]`, broker.CodeBadRequest, "", ""},
		{"string", `"start-fetch"`, broker.CodeBadRequest, "", ""},
		{"null", `null`, broker.CodeBadRequest, "", ""},
		{"empty object", `{}`, broker.CodeBadRequest, "", ""},
		{"not UTF-8", "\xff\xfe", broker.CodeBadRequest, "", ""},
		{"wrong type of url keeps id", `{"type":"start-fetch","id":"w1","url":5}`, broker.CodeBadRequest, "w1", ""},
		{"wrong type of headers keeps id", `{"type":"start-fetch","id":"w2","headers":["a"]}`, broker.CodeBadRequest, "w2", ""},
		{"timeout too big for int64 keeps id", `{"type":"start-fetch","id":"w3","timeout_ms":1e300}`, broker.CodeBadRequest, "w3", ""},
		{"wrong type of id", `{"type":"start-fetch","id":7}`, broker.CodeBadRequest, "", ""},
		{"wrong type of id, other field bad too", `{"type":"start-fetch","id":7,"url":5}`, broker.CodeBadRequest, "", ""},
		{"missing id", `{"type":"start-fetch","url":"http://a/"}`, broker.CodeBadRequest, "", ""},
		{"empty id", `{"type":"start-fetch","id":""}`, broker.CodeBadRequest, "", ""},
		{"id of 129 characters", `{"type":"start-fetch","id":"` + long + `y"}`, broker.CodeBadRequest, "", ""},
		{"id with a tab", `{"type":"start-fetch","id":"a\tb"}`, broker.CodeBadRequest, "", ""},
		{"id with NUL", `{"type":"start-fetch","id":"a\u0000"}`, broker.CodeBadRequest, "", ""},
		{"id with DEL", `{"type":"start-fetch","id":"a\u007f"}`, broker.CodeBadRequest, "", ""},
		{"non-ASCII id", `{"type":"start-fetch","id":"é"}`, broker.CodeBadRequest, "", ""},
		{"invalid id and a bad field", `{"type":"start-fetch","id":"é","url":5}`, broker.CodeBadRequest, "", ""},
		{"missing type keeps id", `{"id":"t0"}`, broker.CodeBadRequest, "t0", ""},
		{"unknown type keeps id", `{"type":"launch","id":"u1"}`, broker.CodeBadRequest, "u1", ""},
		{"server frame type keeps id", `{"type":"result","id":"u2"}`, broker.CodeBadRequest, "u2", ""},
		{"type is case-sensitive", `{"type":"Start-Fetch","id":"u3"}`, broker.CodeBadRequest, "u3", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, werr := parseFrame([]byte(tc.in))
			if f == nil {
				t.Fatal("nil frame")
			}
			var code broker.Code
			if werr != nil {
				code = werr.Code
				if werr.Message == "" {
					t.Error("refusal without a message")
				}
			}
			if code != tc.wantCode || f.ID != tc.wantID {
				t.Fatalf("got code %q id %q (err %v), want code %q id %q", code, f.ID, werr, tc.wantCode, tc.wantID)
			}
			if werr == nil && f.Type != tc.wantType {
				t.Errorf("got type %q, want %q", f.Type, tc.wantType)
			}
		})
	}
}

func TestFrameFetchRequest(t *testing.T) {
	lim := limits{maxBody: 16, maxTimeoutMS: 1000, maxURL: 64, maxHeaders: 2}
	cases := []struct {
		name     string
		in       string // the fields after "type" and "id"
		wantCode broker.Code
		check    func(t *testing.T, r FetchRequest)
	}{
		{"defaults", `"url":"http://a/"`, "", func(t *testing.T, r FetchRequest) {
			if r.Method != "GET" || r.Body != nil && len(r.Body) != 0 || r.TimeoutMS != 0 || r.Retry {
				t.Errorf("got %+v, want GET with no body, default timeout, no retry", r)
			}
		}},
		{"method upper-cased", `"url":"https://a/","method":"post","retry":true`, "", func(t *testing.T, r FetchRequest) {
			if r.Method != "POST" || !r.Retry {
				t.Errorf("got method %q retry %v", r.Method, r.Retry)
			}
		}},
		{"extension method", `"url":"http://a/","method":"PROPFIND"`, "", nil},
		{"base64 body decoded", `"url":"http://a/","body":"AAEC/w==","body_encoding":"base64"`, "", func(t *testing.T, r FetchRequest) {
			if string(r.Body) != "\x00\x01\x02\xff" {
				t.Errorf("body %q", r.Body)
			}
		}},
		{"body at the limit", `"url":"http://a/","body":"` + strings.Repeat("b", 16) + `"`, "", nil},
		{"base64 body at the limit", `"url":"http://a/","body":"` + strings.Repeat("A", 20) + `","body_encoding":"base64"`, "", nil},
		{"headers at the limit", `"url":"http://a/","headers":{"a":"1","b":"2"}`, "", nil},
		{"timeout at the limit", `"url":"http://a/","timeout_ms":1000`, "", nil},
		{"upper-case scheme", `"url":"HTTPS://A/"`, "", nil},
		{"userinfo is the policy's call", `"url":"http://u@a/"`, "", nil},
		{"url at the limit", `"url":"http://a/` + strings.Repeat("p", 64-len("http://a/")) + `"`, "", nil},

		{"missing url", ``, broker.CodeInvalidURL, nil},
		{"url over the limit", `"url":"http://a/` + strings.Repeat("p", 65-len("http://a/")) + `"`, broker.CodeInvalidURL, nil},
		{"ftp url", `"url":"ftp://a/x"`, broker.CodeInvalidURL, nil},
		{"javascript url", `"url":"javascript:alert(1)"`, broker.CodeInvalidURL, nil},
		{"relative url", `"url":"/p"`, broker.CodeInvalidURL, nil},
		{"no host", `"url":"http:///p"`, broker.CodeInvalidURL, nil},
		{"port only", `"url":"http://:80/"`, broker.CodeInvalidURL, nil},
		{"unparsable url", `"url":"http://[::1"`, broker.CodeInvalidURL, nil},
		{"control character in url", `"url":"http://a/\n"`, broker.CodeInvalidURL, nil},
		{"method with space", `"url":"http://a/","method":"GE T"`, broker.CodeBadRequest, nil},
		{"method too long", `"url":"http://a/","method":"` + strings.Repeat("A", 33) + `"`, broker.CodeBadRequest, nil},
		{"non-ASCII method", `"url":"http://a/","method":"GÉT"`, broker.CodeBadRequest, nil},
		{"too many headers", `"url":"http://a/","headers":{"a":"1","b":"2","c":"3"}`, broker.CodeTooLarge, nil},
		{"header name with space", `"url":"http://a/","headers":{"a b":"1"}`, broker.CodeBadRequest, nil},
		{"header name with colon", `"url":"http://a/","headers":{"a:b":"1"}`, broker.CodeBadRequest, nil},
		{"empty header name", `"url":"http://a/","headers":{"":"1"}`, broker.CodeBadRequest, nil},
		{"CRLF in header value", `"url":"http://a/","headers":{"x":"1\r\nInjected: yes"}`, broker.CodeBadRequest, nil},
		{"NUL in header value", `"url":"http://a/","headers":{"x":"\u0000"}`, broker.CodeBadRequest, nil},
		{"body over the limit", `"url":"http://a/","body":"` + strings.Repeat("b", 17) + `"`, broker.CodeTooLarge, nil},
		{"decoded body over the limit", `"url":"http://a/","body":"` + strings.Repeat("A", 24) + `","body_encoding":"base64"`, broker.CodeTooLarge, nil},
		{"bad base64", `"url":"http://a/","body":"!!","body_encoding":"base64"`, broker.CodeBadRequest, nil},
		{"unknown body encoding", `"url":"http://a/","body":"x","body_encoding":"gzip"`, broker.CodeBadRequest, nil},
		{"negative timeout", `"url":"http://a/","timeout_ms":-1`, broker.CodeBadRequest, nil},
		{"timeout over the limit", `"url":"http://a/","timeout_ms":1001`, broker.CodeBadRequest, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := `{"type":"start-fetch","id":"f"`
			if tc.in != "" {
				in += "," + tc.in
			}
			in += "}"
			f, werr := parseFrame([]byte(in))
			if werr != nil {
				t.Fatalf("parseFrame(%s): %v", in, werr)
			}
			req, werr := f.fetchRequest(lim)
			var code broker.Code
			if werr != nil {
				code = werr.Code
			}
			if code != tc.wantCode {
				t.Fatalf("got code %q (%v), want %q", code, werr, tc.wantCode)
			}
			if werr == nil && tc.check != nil {
				tc.check(t, req)
			}
		})
	}
}

func TestErrorFrameEchoesIDAndCode(t *testing.T) {
	for _, id := range []string{"", "c-1", `quote" and \backslash`, strings.Repeat("z", 128)} {
		werr := broker.Errorf(broker.CodeBadRequest, "unknown type %q", truncate("\xff\xfe"+strings.Repeat("é", 40), 64))
		var out errorFrame
		if err := json.Unmarshal(encodeError(id, "J", werr), &out); err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		if out.Type != frameError || out.ID != id || out.Job != "J" || out.Code != "bad_request" || out.Message == "" {
			t.Errorf("id %q: got %+v", id, out)
		}
	}
}
