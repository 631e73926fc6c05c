package broker

import (
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
