package origin

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pipeline-dev/pipeline/broker"
)

// Frame types (PROTOCOL.md §1).
const (
	frameHello      = "hello"
	frameStartFetch = "start-fetch"
	frameGetResult  = "get-result"
	frameEnqueued   = "enqueued"
	frameResult     = "result"
	frameError      = "error"
	framePending    = "pending"
	frameCancel     = "cancel"
	frameCanceled   = "canceled"
)

// maxDelayMS caps start-fetch delay_ms (PROTOCOL.md §1.1): one day.
const maxDelayMS = 86_400_000

// clientFrame is any client → origin frame.
type clientFrame struct {
	Type         string            `json:"type"`
	ID           string            `json:"id"`
	Job          string            `json:"job"`
	Key          string            `json:"key"`
	DelayMS      int64             `json:"delay_ms"`
	URL          string            `json:"url"`
	Method       string            `json:"method"`
	Headers      map[string]string `json:"headers"`
	Body         string            `json:"body"`
	BodyEncoding string            `json:"body_encoding"`
	TimeoutMS    int64             `json:"timeout_ms"`
	Retry        bool              `json:"retry"`
}

// FetchRequest is an outbound fetch to enqueue.
type FetchRequest struct {
	URL     string
	Method  string
	Headers map[string]string
	Body    []byte
	// Timeout for the fetch in milliseconds; 0 uses the executor default.
	TimeoutMS int64
	// Retry lets the executor retry a non-idempotent method.
	Retry bool
	// Key, when set, names the job (broker.KeyJobID): at most one job per
	// key is stored within the key window (PROTOCOL.md §1.1).
	Key string
	// Delay holds the job back from executors this long after it is stored.
	Delay time.Duration
}

// limits the frame parser enforces.
type limits struct {
	maxBody      int
	maxTimeoutMS int64
	maxURL       int
	maxHeaders   int
}

// validID reports whether id is 1..128 printable ASCII characters.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// parseFrame decodes one client frame. On failure it returns the id it could
// read (possibly empty) and a *broker.Error.
func parseFrame(data []byte) (*clientFrame, *broker.Error) {
	var f clientFrame
	if err := json.Unmarshal(data, &f); err != nil {
		// Recover the id when only another field is bad, so the client can
		// match the error to its request.
		var idOnly struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(data, &idOnly)
		f.ID = idOnly.ID
		if !validID(f.ID) {
			f.ID = ""
		}
		return &f, broker.Errorf(broker.CodeBadRequest, "malformed JSON: %v", trimErr(err))
	}
	if !validID(f.ID) {
		id := f.ID
		f.ID = ""
		if id == "" {
			return &f, broker.Errorf(broker.CodeBadRequest, "missing id")
		}
		return &f, broker.Errorf(broker.CodeBadRequest, "id must be 1..128 printable ASCII characters")
	}
	switch f.Type {
	case frameStartFetch, frameGetResult, frameCancel:
	case "":
		return &f, broker.Errorf(broker.CodeBadRequest, "missing type")
	default:
		return &f, broker.Errorf(broker.CodeBadRequest, "unknown type %q", truncate(f.Type, 64))
	}
	if f.Key != "" && !validID(f.Key) {
		return &f, broker.Errorf(broker.CodeBadRequest, "key must be 1..128 printable ASCII characters")
	}
	if f.Type != frameStartFetch && f.Job != "" && f.Key != "" {
		return &f, broker.Errorf(broker.CodeBadRequest, "%s takes a job or a key, not both", f.Type)
	}
	return &f, nil
}

// target is the job a get-result or cancel frame names: by job id, or by
// key (broker.KeyJobID). Empty when it names neither.
func (f *clientFrame) target() string {
	if f.Key != "" {
		return broker.KeyJobID(f.Key)
	}
	return f.Job
}

// fetchRequest validates a start-fetch frame's fields.
func (f *clientFrame) fetchRequest(l limits) (FetchRequest, *broker.Error) {
	req := FetchRequest{URL: f.URL, Method: f.Method, Headers: f.Headers, TimeoutMS: f.TimeoutMS, Retry: f.Retry, Key: f.Key}
	if err := checkURL(f.URL, l.maxURL); err != nil {
		return req, err
	}
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	if !validToken(req.Method) || len(req.Method) > 32 {
		return req, broker.Errorf(broker.CodeBadRequest, "bad method %q", truncate(req.Method, 32))
	}
	req.Method = strings.ToUpper(req.Method)
	if len(req.Headers) > l.maxHeaders {
		return req, broker.Errorf(broker.CodeTooLarge, "%d headers, at most %d allowed", len(req.Headers), l.maxHeaders)
	}
	for k, v := range req.Headers {
		if !validToken(k) {
			return req, broker.Errorf(broker.CodeBadRequest, "bad header name %q", truncate(k, 64))
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return req, broker.Errorf(broker.CodeBadRequest, "bad value for header %q", truncate(k, 64))
		}
	}
	switch f.BodyEncoding {
	case "", "utf8":
		req.Body = []byte(f.Body)
	case "base64":
		b, err := base64.StdEncoding.DecodeString(f.Body)
		if err != nil {
			return req, broker.Errorf(broker.CodeBadRequest, "body is not valid base64")
		}
		req.Body = b
	default:
		return req, broker.Errorf(broker.CodeBadRequest, "unknown body_encoding %q", truncate(f.BodyEncoding, 32))
	}
	if len(req.Body) > l.maxBody {
		return req, broker.Errorf(broker.CodeTooLarge, "body is %d bytes, limit %d", len(req.Body), l.maxBody)
	}
	if f.DelayMS < 0 || f.DelayMS > maxDelayMS {
		return req, broker.Errorf(broker.CodeBadRequest, "delay_ms must be 0..%d", maxDelayMS)
	}
	req.Delay = time.Duration(f.DelayMS) * time.Millisecond
	if req.TimeoutMS < 0 || req.TimeoutMS > l.maxTimeoutMS {
		return req, broker.Errorf(broker.CodeBadRequest, "timeout_ms must be 0..%d", l.maxTimeoutMS)
	}
	return req, nil
}

// checkURL accepts absolute http(s) URLs with a host. Where the URL may go
// is the executor's destination policy's decision.
func checkURL(raw string, max int) *broker.Error {
	if raw == "" {
		return broker.Errorf(broker.CodeInvalidURL, "missing url")
	}
	if len(raw) > max {
		return broker.Errorf(broker.CodeInvalidURL, "url longer than %d bytes", max)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return broker.Errorf(broker.CodeInvalidURL, "cannot parse url: %v", trimErr(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return broker.Errorf(broker.CodeInvalidURL, "scheme must be http or https")
	}
	if u.Host == "" || u.Hostname() == "" {
		return broker.Errorf(broker.CodeInvalidURL, "url has no host")
	}
	return nil
}

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) && len(s) > 0 {
		s = s[:len(s)-1]
	}
	return s + "…"
}

func trimErr(err error) string { return truncate(err.Error(), 200) }

// Outgoing frames.

type helloFrame struct {
	Type    string `json:"type"`
	Origin  string `json:"origin"`
	Version string `json:"version"`
}

// pendingFrame answers a get-result for a job that has not finished
// (PROTOCOL.md §1.1).
type pendingFrame struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	Job   string `json:"job"`
	State string `json:"state"`
}

type enqueuedFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Job  string `json:"job"`
	// Duplicate says the frame's key named a job that already existed:
	// nothing new was stored (PROTOCOL.md §1.1).
	Duplicate bool `json:"duplicate,omitempty"`
}

// canceledFrame answers a cancel of a job that had no final frame yet.
type canceledFrame struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Job  string `json:"job"`
}

type errorFrame struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Job     string `json:"job,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Timing is the result frame's timing object, in milliseconds.
type Timing struct {
	EnqueueMS float64 `json:"enqueue_ms"`
	QueueMS   float64 `json:"queue_ms"`
	FetchMS   float64 `json:"fetch_ms"`
	TotalMS   float64 `json:"total_ms"`
	// DelayMS is the start-fetch's delay_ms, for delayed jobs.
	DelayMS float64 `json:"delay_ms,omitempty"`
}

type resultFrame struct {
	Type         string            `json:"type"`
	ID           string            `json:"id"`
	Job          string            `json:"job"`
	Status       int               `json:"status"`
	Headers      map[string]string `json:"headers"`
	Body         string            `json:"body"`
	BodyEncoding string            `json:"body_encoding"`
	Truncated    bool              `json:"truncated"`
	Attempt      int               `json:"attempt"`
	Executor     string            `json:"executor"`
	Timing       Timing            `json:"timing"`
}

// encodeResult renders a result (or its error) as the client's final frame.
func encodeResult(clientID string, res *broker.Result, t Timing) []byte {
	if res.Error != nil {
		return mustJSON(errorFrame{Type: frameError, ID: clientID, Job: res.JobID, Code: string(res.Error.Code), Message: res.Error.Message})
	}
	f := resultFrame{
		Type: frameResult, ID: clientID, Job: res.JobID, Status: res.Status, Headers: res.Headers,
		Truncated: res.Truncated, Attempt: res.Attempt, Executor: res.Executor, Timing: t,
	}
	if f.Headers == nil {
		f.Headers = map[string]string{}
	}
	if utf8.Valid(res.Body) {
		f.Body, f.BodyEncoding = string(res.Body), "utf8"
	} else {
		f.Body, f.BodyEncoding = base64.StdEncoding.EncodeToString(res.Body), "base64"
	}
	return mustJSON(f)
}

func encodeError(id, job string, e *broker.Error) []byte {
	return mustJSON(errorFrame{Type: frameError, ID: id, Job: job, Code: string(e.Code), Message: e.Message})
}

// mustJSON marshals values whose types cannot fail to encode (no channels,
// funcs or cyclic data).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("origin: encode frame: %v", err))
	}
	return b
}
