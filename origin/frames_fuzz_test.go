package origin

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/pipeline-dev/pipeline/broker"
)

// fuzzLimits are small, so the fuzzer reaches every limit cheaply.
var fuzzLimits = limits{maxBody: 64, maxTimeoutMS: 300_000, maxURL: 256, maxHeaders: 4}

// documentedCodes is the closed set of wire error codes (PROTOCOL.md §1).
var documentedCodes = map[broker.Code]bool{
	broker.CodeBadRequest: true, broker.CodeInvalidURL: true, broker.CodeBlockedDestination: true,
	broker.CodeTooLarge: true, broker.CodeQueueFull: true, broker.CodeTimeout: true,
	broker.CodeFetchFailed: true, broker.CodeUnauthorized: true, broker.CodeInternal: true,
}

// frameSeeds are well-formed and hostile client frames.
var frameSeeds = []string{
	`{"type":"start-fetch","id":"c-1","url":"http://127.0.0.1:8090/delay?ms=14","method":"GET","headers":{"accept":"text/plain"},"body":"","timeout_ms":10000}`,
	`{"type":"start-fetch","id":"c-2","url":"https://example.com/","method":"post","body":"aGVsbG8=","body_encoding":"base64","retry":true}`,
	`{"type":"get-result","id":"g","job":"fGd2Uu0vOQ1cGHaLqVZDvz"}`,
	`{"type":"start-fetch",`,
	`[1,2]`, `null`, `""`, `0`, `{}`, ``, `{"type":"launch","id":"u1"}`,
	`{"type":"start-fetch","id":"w1","url":5}`,
	`{"type":"start-fetch","id":"` + strings.Repeat("x", 129) + `","url":"http://a/"}`,
	`{"type":"start-fetch","id":"` + strings.Repeat("x", 128) + `","url":"http://a/"}`,
	`{"type":"start-fetch","id":"tab\there","url":"http://a/"}`,
	`{"type":"start-fetch","id":"\u00e9","url":"http://a/"}`,
	`{"type":"start-fetch","id":"nul\u0000","url":"http://a/"}`,
	`{"type":"start-fetch","id":"a","id":"b","url":"http://a/"}`,
	`{"TYPE":"start-fetch","ID":"ci","URL":"http://a/"}`,
	`{"type":"start-fetch","id":"m","url":"http://a/","method":"GE T"}`,
	`{"type":"start-fetch","id":"m","url":"http://a/","method":"` + strings.Repeat("A", 33) + `"}`,
	`{"type":"start-fetch","id":"t","url":"http://a/","timeout_ms":-1}`,
	`{"type":"start-fetch","id":"t","url":"http://a/","timeout_ms":1e300}`,
	`{"type":"start-fetch","id":"t","url":"http://a/","timeout_ms":300001}`,
	`{"type":"start-fetch","id":"h","url":"http://a/","headers":{"a b":"x"}}`,
	`{"type":"start-fetch","id":"h","url":"http://a/","headers":{"x":"a\r\nInjected: 1"}}`,
	`{"type":"start-fetch","id":"h","url":"http://a/","headers":{"a":"1","b":"2","c":"3","d":"4","e":"5"}}`,
	`{"type":"start-fetch","id":"b","url":"http://a/","body":"` + strings.Repeat("b", 65) + `"}`,
	`{"type":"start-fetch","id":"b","url":"http://a/","body":"!!!","body_encoding":"base64"}`,
	`{"type":"start-fetch","id":"b","url":"http://a/","body":"x","body_encoding":"gzip"}`,
	`{"type":"start-fetch","id":"u","url":"ftp://example.com/x"}`,
	`{"type":"start-fetch","id":"u","url":"/just/a/path"}`,
	`{"type":"start-fetch","id":"u","url":"http://[::1"}`,
	`{"type":"start-fetch","id":"u","url":"http://user:pw@127.0.0.1:1/"}`,
	`{"type":"start-fetch","id":"u","url":"http://2130706433/"}`,
	`{"type":"start-fetch","id":"u","url":"http://0x7f.1/"}`,
	`{"type":"start-fetch","id":"u","url":"http://[::ffff:127.0.0.1]/"}`,
	`{"type":"start-fetch","id":"u","url":"HTTP://EXAMPLE.COM/"}`,
	`{"type":"start-fetch","id":"u","url":"http://:80/"}`,
	`{"type":"start-fetch","id":"u","url":"http:///path"}`,
	`{"type":"start-fetch","id":"u","url":"http://%41/"}`,
	`{"type":"start-fetch","id":"u","url":"http://a/` + strings.Repeat("p", 300) + `"}`,
	`{"type":"start-fetch","id":"x","url":"http://a/","headers":null,"body":null}`,
	`{"type":"start-fetch","id":"x","url":"http://a/","headers":[]}`,
	`{"type":"` + strings.Repeat("t", 100) + `","id":"x"}`,
	"{\"type\":\"start-fetch\",\"id\":\"x\",\"url\":\"http://a/\",\"method\":\"\xff\"}",
	"\xff\xfe{}",
}

// FuzzParseFrame checks the client frame decoder on arbitrary input: it never
// panics, every refusal carries a documented code and either no id or a valid
// one, the error frame it becomes is valid JSON echoing that id, and every
// accepted start-fetch is something the executor can be handed: a valid id,
// an absolute http(s) URL with a host, a valid method and headers, a body
// and timeout within the limits.
func FuzzParseFrame(f *testing.F) {
	for _, s := range frameSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, werr := parseFrame(data)
		if fr == nil {
			t.Fatalf("parseFrame(%q) returned a nil frame", data)
		}
		if werr != nil {
			checkRefusal(t, "parseFrame", data, fr.ID, werr, broker.CodeBadRequest, broker.CodeTooLarge)
			return
		}
		if !validID(fr.ID) {
			t.Fatalf("parseFrame(%q) accepted id %q", data, fr.ID)
		}
		if fr.Type != frameStartFetch && fr.Type != frameGetResult {
			t.Fatalf("parseFrame(%q) accepted type %q", data, fr.Type)
		}
		if fr.Type != frameStartFetch {
			return
		}
		req, werr := fr.fetchRequest(fuzzLimits)
		if werr != nil {
			checkRefusal(t, "fetchRequest", data, fr.ID, werr, broker.CodeBadRequest, broker.CodeInvalidURL, broker.CodeTooLarge)
			return
		}
		checkAcceptedFetch(t, data, req)
	})
}

// checkRefusal checks one refused frame and the error frame sent for it.
func checkRefusal(t *testing.T, fn string, data []byte, id string, werr *broker.Error, allowed ...broker.Code) {
	t.Helper()
	if !documentedCodes[werr.Code] {
		t.Fatalf("%s(%q): undocumented code %q", fn, data, werr.Code)
	}
	ok := false
	for _, c := range allowed {
		ok = ok || c == werr.Code
	}
	if !ok {
		t.Fatalf("%s(%q): code %q, want one of %v", fn, data, werr.Code, allowed)
	}
	if werr.Message == "" {
		t.Fatalf("%s(%q): empty message", fn, data)
	}
	if id != "" && !validID(id) {
		t.Fatalf("%s(%q): refusal carries invalid id %q", fn, data, id)
	}
	var out struct {
		Type, ID, Code, Message string
	}
	frame := encodeError(id, "", werr)
	if err := json.Unmarshal(frame, &out); err != nil {
		t.Fatalf("%s(%q): error frame %q is not JSON: %v", fn, data, frame, err)
	}
	if out.Type != frameError || out.ID != id || out.Code != string(werr.Code) || out.Message == "" {
		t.Fatalf("%s(%q): error frame %s does not carry id %q and code %s", fn, data, frame, id, werr.Code)
	}
}

// checkAcceptedFetch checks an accepted start-fetch against the limits.
func checkAcceptedFetch(t *testing.T, data []byte, req FetchRequest) {
	t.Helper()
	u, err := url.Parse(req.URL)
	if err != nil {
		t.Fatalf("accepted %q: url %q does not parse: %v", data, req.URL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.Opaque != "" {
		t.Fatalf("accepted %q: url %q is not an absolute http(s) URL with a host", data, req.URL)
	}
	if len(req.URL) > fuzzLimits.maxURL {
		t.Fatalf("accepted %q: url of %d bytes", data, len(req.URL))
	}
	if req.Method == "" || len(req.Method) > 32 || !validToken(req.Method) || strings.ToUpper(req.Method) != req.Method {
		t.Fatalf("accepted %q: method %q", data, req.Method)
	}
	if len(req.Headers) > fuzzLimits.maxHeaders {
		t.Fatalf("accepted %q: %d headers", data, len(req.Headers))
	}
	for k, v := range req.Headers {
		if !validToken(k) || strings.ContainsAny(v, "\r\n\x00") {
			t.Fatalf("accepted %q: header %q: %q", data, k, v)
		}
		// What the executor will do with it must not fail either.
		h := http.Header{}
		h.Set(k, v)
	}
	if len(req.Body) > fuzzLimits.maxBody {
		t.Fatalf("accepted %q: body of %d bytes, limit %d", data, len(req.Body), fuzzLimits.maxBody)
	}
	if req.TimeoutMS < 0 || req.TimeoutMS > fuzzLimits.maxTimeoutMS {
		t.Fatalf("accepted %q: timeout_ms %d", data, req.TimeoutMS)
	}
}
