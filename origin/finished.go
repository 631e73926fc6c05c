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
	// direct is the direct-get request subject prefix for the results
	// stream in this origin's account: "$JS.API.DIRECT.GET.PIPELINE_RESULTS."
	// or, in its own account, the same under broker.PipelineAPIPrefix.
	direct string
	on     bool

	// storing holds records this origin stores itself (a canceled job's
	// final frame, a result that came on the plain subject) until the
	// stream acknowledged them, so a get-result right after finds them.
	mu      sync.Mutex
	storing map[string][]byte
}

func newFinished(nc *nats.Conn, s broker.Subjects, origin, apiPrefix string, on bool) *finished {
	return &finished{
		nc: nc, subjects: s, origin: origin, on: on,
		direct: apiPrefix + ".DIRECT.GET." + broker.ResultsStream + ".",
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
	m, err := f.nc.RequestWithContext(ctx, f.direct+f.subjects.ResultOf(f.origin, jobID), nil)
	if err != nil {
		return nil, fmt.Errorf("get finished result %s: %w", jobID, err)
	}
	// A direct get answers "no such message" with an empty message
	// carrying a status header (NATS/1.0 404).
	if st := m.Header.Get("Status"); st != "" && len(m.Data) == 0 {
		if st == "404" {
			return nil, nil
		}
		return nil, fmt.Errorf("get finished result %s: status %s %s", jobID, st, m.Header.Get("Description"))
	}
	res, err := broker.DecodeResult(m.Data)
	if err != nil {
		return nil, fmt.Errorf("get finished result %s: %w", jobID, err)
	}
	return res, nil
}

// put stores a record this origin makes itself (a canceled job's final
// frame, or a copy of a result that came on the plain results subject) on
// the job's subject under message id msgID. A canceled frame uses the job
// id, the executors' results' message id, so that of a cancel and a result
// racing the first stored wins. The record is visible to get at once; call
// stored when the future resolves.
func (f *finished) put(js jetstream.JetStream, jobID, msgID string, data []byte) (jetstream.PubAckFuture, error) {
	f.begin(jobID, data)
	fut, err := js.PublishAsync(f.subjects.ResultOf(f.origin, jobID), data, jetstream.WithMsgID(msgID))
	if err != nil {
		f.stored(jobID)
		return nil, fmt.Errorf("store finished result %s: %w", jobID, err)
	}
	return fut, nil
}
