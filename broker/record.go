package broker

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A job's finished record is the one message on its result subjects
// (Subjects.ResultOf, or Subjects.BulkResultOf for a large result; both
// matched by Subjects.RecordOf) in the results stream: its result, or the
// canceled frame of a job canceled first. Records are stored with
// FirstRecord, so whoever stores first wins and a second store (a
// redelivered job fetched again, a cancel racing the result, on either
// lane) is refused by the stream itself. That check is on the subjects,
// which only its origin and the executors may publish on, not on the
// stream-wide Nats-Msg-Id de-duplication, which any publisher into the
// stream could pre-empt with a forged id.

// FirstRecord is the publish option that stores a finished record only if
// the job's record subjects (record, a Subjects.RecordOf wildcard) hold
// none yet (Nats-Expected-Last-Subject-Sequence: 0, checked on record by
// Nats-Expected-Last-Subject-Sequence-Subject). A server older than 2.11
// ignores the second header and checks the subject published on only.
func FirstRecord(record string) jetstream.PublishOpt {
	return jetstream.WithExpectLastSequenceForSubject(0, record)
}

// IsRecordTaken reports whether err is the stream's refusal of a record
// stored with FirstRecord (or an expected sequence that was not the last):
// the subject already holds a record.
func IsRecordTaken(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && server.ErrorIdentifier(apiErr.ErrorCode) == server.JSStreamWrongLastSequenceErrF
}

// Record is a finished record read back from the results stream.
type Record struct {
	Seq    uint64
	Result *Result
}

// GetRecord reads the record on subj (a Subjects.RecordOf wildcard, or one
// lane's subject) by direct get of its last message; apiPrefix is where nc sees the pipeline account's JetStream
// API ("$JS.API", or PipelineAPIPrefix for an origin in its own account).
// It returns nil, nil when there is none. It fails when ctx ends first, the
// stream answers with an unexpected status, or the record cannot be
// decoded. Safe for concurrent use.
func GetRecord(ctx context.Context, nc *nats.Conn, apiPrefix, subj string) (*Record, error) {
	m, err := nc.RequestWithContext(ctx, apiPrefix+".DIRECT.GET."+ResultsStream+"."+subj, nil)
	if err != nil {
		return nil, fmt.Errorf("read record %s: %w", subj, err)
	}
	// "No such message" is an empty message with a status header
	// (NATS/1.0 404).
	if st := m.Header.Get("Status"); st != "" && len(m.Data) == 0 {
		if st == "404" {
			return nil, nil
		}
		return nil, fmt.Errorf("read record %s: status %s %s", subj, st, m.Header.Get("Description"))
	}
	res, err := DecodeResult(m.Data)
	if err != nil {
		return nil, fmt.Errorf("read record %s: %w", subj, err)
	}
	seq, _ := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	return &Record{Seq: seq, Result: res}, nil
}

// SameJob reports whether two records belong to one job: every record
// under a server-named job id does; under a key's id (KeyJobID) only those
// of the same request (ReceivedAt), as a key names a new job once its key
// window has passed.
func SameJob(a, b *Result) bool {
	return !IsKeyJobID(a.JobID) || a.ReceivedAt == b.ReceivedAt
}

// StoreAfterRefusal handles a record of res refused by FirstRecord (data is
// res encoded, subj the subject it was published on, record the job's
// Subjects.RecordOf): it reads the record the job holds and, when that
// belongs to an earlier job under the same key, stores data on subj after
// it (expecting its sequence on record) and returns true. When the subject holds a
// record of this very job (stored before: a redelivery, or the cancel or
// result that won a race) it stores nothing and returns false: the job is
// finished. It fails when the record cannot be read or stored; a store that
// loses another race is retried a few times. Safe for concurrent use.
func StoreAfterRefusal(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, apiPrefix, subj, record string, res *Result, data []byte) (bool, error) {
	for range 3 {
		rec, err := GetRecord(ctx, nc, apiPrefix, record)
		if err != nil {
			return false, err
		}
		var opt jetstream.PublishOpt
		switch {
		case rec == nil: // trimmed meanwhile
			opt = FirstRecord(record)
		case SameJob(rec.Result, res):
			return false, nil
		default:
			opt = jetstream.WithExpectLastSequenceForSubject(rec.Seq, record)
		}
		_, err = js.Publish(ctx, subj, data, opt)
		if err == nil {
			return true, nil
		}
		if !IsRecordTaken(err) {
			return false, fmt.Errorf("store record %s: %w", subj, err)
		}
	}
	return false, fmt.Errorf("store record %s: refused three times (records stored concurrently)", subj)
}
