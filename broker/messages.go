package broker

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"time"
)

// Continuation names the code an origin runs when a job's result arrives,
// plus the JSON state it needs. Both travel with the job and come back with
// the result, so a continuation survives an origin restart.
type Continuation struct {
	Name  string          `json:"name"`
	State json.RawMessage `json:"state,omitempty"`
}

// Job is a fetch job as stored in the jobs stream.
type Job struct {
	// ID is the job id, unique per job. Its JetStream Nats-Msg-Id is
	// JobMsgID(origin, ID).
	ID string `json:"id"`
	// Origin is the id of the origin that created the job; the result is
	// published on that origin's results subject.
	Origin string `json:"origin"`
	// ClientID is the id the WebSocket client chose (may be empty for jobs
	// created through the Go API).
	ClientID  string            `json:"client_id,omitempty"`
	URL       string            `json:"url"`
	Method    string            `json:"method"`
	Headers   map[string]string `json:"headers,omitempty"`
	Body      []byte            `json:"body,omitempty"`
	TimeoutMS int64             `json:"timeout_ms,omitempty"`
	// Retry allows the executor to retry a non-idempotent method.
	Retry bool `json:"retry,omitempty"`
	// ReceivedAt is when the origin received the request (Unix nanoseconds).
	ReceivedAt   int64        `json:"received_at"`
	Continuation Continuation `json:"continuation"`
	// DelayMS is the delay the client asked for (start-fetch delay_ms):
	// the job reached the jobs stream this long after it was stored.
	DelayMS int64 `json:"delay_ms,omitempty"`
	// BulkLane says the origin reads the bulk lane of its results
	// (Subjects.BulkResultOf): an executor stores a result of
	// BulkResultBytes or more there. Without it (an origin of an older
	// version) every result goes to Subjects.ResultOf.
	BulkLane bool `json:"bulk_lane,omitempty"`
}

// Encode returns the job's wire form (the compact binary form, codec.go).
func (j *Job) Encode() ([]byte, error) { return encodeJob(j), nil }

// DecodeJob parses a job's wire form: binary, or JSON from older versions.
func DecodeJob(data []byte) (*Job, error) {
	var j *Job
	if len(data) > 0 && data[0] == '{' {
		j = &Job{}
		if err := json.Unmarshal(data, j); err != nil {
			return nil, fmt.Errorf("decode job: %w", err)
		}
	} else {
		var err error
		if j, err = decodeJob(data); err != nil {
			return nil, err
		}
	}
	if j.ID == "" || j.Origin == "" {
		return nil, fmt.Errorf("decode job: missing id or origin")
	}
	return j, nil
}

// Result is the outcome of a job as stored in the results stream.
type Result struct {
	JobID     string            `json:"job"`
	Origin    string            `json:"origin"`
	ClientID  string            `json:"client_id,omitempty"`
	Status    int               `json:"status,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	Body      []byte            `json:"body,omitempty"`
	Truncated bool              `json:"truncated,omitempty"`
	// Attempt is the delivery number of the job that produced this result.
	Attempt  int    `json:"attempt"`
	Executor string `json:"executor"`
	// Error is set when the job failed; Status/Headers/Body are then empty.
	Error *Error `json:"error,omitempty"`
	// Timestamps (Unix nanoseconds) and the fetch duration.
	ReceivedAt   int64        `json:"received_at"`
	StoredAt     int64        `json:"stored_at"`
	PickedAt     int64        `json:"picked_at"`
	FetchNanos   int64        `json:"fetch_ns"`
	Continuation Continuation `json:"continuation"`
	// DelayMS is the job's DelayMS.
	DelayMS int64 `json:"delay_ms,omitempty"`
	// Attempts is how many requests the executor sent for the job in its
	// last delivery (in-process retries and Retry-After waits included); 0
	// in results of older versions.
	Attempts int `json:"attempts,omitempty"`
	// WaitedNanos is how long the job waited, without holding an executor
	// slot, for its destination: its rate limit and Retry-After answers.
	WaitedNanos int64 `json:"waited_ns,omitempty"`
}

// Encode returns the result's wire form (the compact binary form, codec.go).
func (r *Result) Encode() ([]byte, error) { return encodeResult(r), nil }

// DecodeResult parses a result's wire form: binary, or JSON from older
// versions.
func DecodeResult(data []byte) (*Result, error) {
	var r *Result
	if len(data) > 0 && data[0] == '{' {
		r = &Result{}
		if err := json.Unmarshal(data, r); err != nil {
			return nil, fmt.Errorf("decode result: %w", err)
		}
	} else {
		var err error
		if r, err = decodeResult(data); err != nil {
			return nil, err
		}
	}
	if r.JobID == "" {
		return nil, fmt.Errorf("decode result: missing job id")
	}
	return r, nil
}

// QueueDuration is the time the job waited in the stream before an executor
// picked it up.
func (r *Result) QueueDuration() time.Duration {
	if r.StoredAt == 0 || r.PickedAt < r.StoredAt {
		return 0
	}
	return time.Duration(r.PickedAt - r.StoredAt)
}

// JobMsgID is the Nats-Msg-Id an origin stores job jobID with: the jobs
// stream de-duplicates by it, across all origins, so it carries the origin
// id: no origin can make another's job look like a duplicate by storing a
// job with the same id first.
func JobMsgID(originID, jobID string) string { return originID + "." + jobID }

// KeyJobID is the job id of the job a client names with idempotency key key
// (start-fetch "key", PROTOCOL.md §1.1): a fixed function of the key, so
// that the jobs stream's de-duplication by Nats-Msg-Id (JobMsgID) stores at
// most one job per key and origin within StreamsConfig.KeyWindow, across
// connections and origin restarts, with no extra stored write. Keys are
// scoped to an origin (JobMsgID carries the origin id). The id is "k"
// followed by 26 base32 characters of the key's SHA-256 (128 bits), which
// no server-named job id (a 22-character NUID) can equal.
func KeyJobID(key string) string {
	sum := sha256.Sum256([]byte(key))
	var b [27]byte
	b[0] = 'k'
	keyIDEncoding.Encode(b[1:], sum[:16])
	return string(b[:])
}

// keyIDEncoding is lower-case base32 without padding: valid in subjects and
// KV keys.
var keyIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// IsKeyJobID reports whether job id was made by KeyJobID (a client's key
// names it, so a key reused after the key window names a new job with the
// same id), rather than by the server (never reused).
func IsKeyJobID(id string) bool { return len(id) == 27 && id[0] == 'k' }
