package origin

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// finished is this origin's view of its finished results. A result is
// stored once, by its executor, on its job's own subject of the results
// stream (broker.Subjects.ResultOf); the stream keeps it after this origin
// acknowledged it (limits retention, trimmed by the executors after the
// retention window: broker.TrimResults), so that message is the job's
// finished record: get-result reads it by direct get, with no second write.
// A disabled store (retention < 0) answers nothing.
type finished struct {
	nc       *nats.Conn
	subjects broker.Subjects
	origin   string
	// apiPrefix is where nc sees the pipeline account's JetStream API:
	// "$JS.API", or broker.PipelineAPIPrefix in the origin's own account.
	apiPrefix string
	on        bool

	// storing holds records this origin stores itself (a canceled job's
	// final frame, a result that came on the plain subject) until the
	// stream acknowledged them, so a get-result right after finds them.
	mu      sync.Mutex
	storing map[string][]byte
}

func newFinished(nc *nats.Conn, s broker.Subjects, origin, apiPrefix string, on bool) *finished {
	return &finished{
		nc: nc, subjects: s, origin: origin, on: on,
		apiPrefix: apiPrefix,
	}
}

// enabled reports whether finished results are kept (retention ≥ 0).
func (f *finished) enabled() bool { return f.on }

// begin makes a record this origin is storing visible to get at once.
func (f *finished) begin(jobID string, data []byte) {
	f.mu.Lock()
	if f.storing == nil {
		f.storing = make(map[string][]byte)
	}
	f.storing[jobID] = data
	f.mu.Unlock()
}

// stored ends the read-your-writes window of a record (stored or failed).
func (f *finished) stored(jobID string) {
	f.mu.Lock()
	delete(f.storing, jobID)
	f.mu.Unlock()
}

// get returns the finished result of jobID, or nil if there is none
// (unknown, not finished, or trimmed after the retention window). It fails
// when the results stream cannot be read (no answer within ctx, or an
// unexpected status).
func (f *finished) get(ctx context.Context, jobID string) (*broker.Result, error) {
	if !f.on {
		return nil, nil
	}
	f.mu.Lock()
	data, ok := f.storing[jobID]
	f.mu.Unlock()
	if ok {
		return broker.DecodeResult(data)
	}
	if broker.ValidateToken("job id", jobID) != nil || jobID == broker.LegacyResultToken {
		return nil, nil // not one of our ids: no subject to look up
	}
	rec, err := broker.GetRecord(ctx, f.nc, f.apiPrefix, f.subjects.RecordOf(f.origin, jobID))
	if err != nil || rec == nil {
		return nil, err
	}
	return rec.Result, nil
}

// store stores a record this origin makes itself (a canceled job's final
// frame, or a copy of a result that came on the plain results subject) as
// res's job's finished record, visible to get at once. The first record of
// a job wins (broker.FirstRecord): stored reports false when the job had
// one already (its result won a race with a cancel, or the copy was stored
// before). It fails when the stream cannot store it within ctx.
func (f *finished) store(ctx context.Context, js jetstream.JetStream, res *broker.Result, data []byte) (stored bool, err error) {
	f.begin(res.JobID, data)
	defer f.stored(res.JobID)
	subj, record := f.subjects.ResultOf(f.origin, res.JobID), f.subjects.RecordOf(f.origin, res.JobID)
	_, err = js.Publish(ctx, subj, data, broker.FirstRecord(record))
	switch {
	case err == nil:
		return true, nil
	case broker.IsRecordTaken(err):
		return broker.StoreAfterRefusal(ctx, f.nc, js, f.apiPrefix, subj, record, res, data)
	default:
		return false, fmt.Errorf("store finished record %s: %w", res.JobID, err)
	}
}
