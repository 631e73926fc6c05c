package origin

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/pipeline-dev/pipeline/broker"
)

// Keys (start-fetch "key", PROTOCOL.md §1.1) name their job
// (broker.KeyJobID), and the jobs stream stores a job id once within the
// key window (its Nats-Msg-Id de-duplication). That holds while the NATS
// server keeps its de-duplication state: for jobs still in the stream
// always, but a server that restarted rebuilds it only from the messages it
// still holds, and a finished job's message is gone. For one key window
// after this origin started, or after its connection to NATS was
// re-established (the server may have restarted), a keyed start-fetch
// therefore first looks for the key's job in the finished-results store.
// After that window the stream's own state covers every key again and a
// keyed fetch costs no read.

// keyCheckDue reports whether keyed start-fetch frames must look in the
// finished-results store first (see above).
func (s *Server) keyCheckDue(now time.Time) bool {
	r := s.nc.Stats().Reconnects
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if r != s.keyReconnects {
		s.keyReconnects = r
		s.keyCheckUntil = now.Add(s.cfg.KeyWindow)
	}
	return now.Before(s.keyCheckUntil)
}

// finishedKeyed reports whether job, a key's job, finished within the key
// window (its result is in the finished-results store). A result older than
// the window belongs to an earlier job under the same key: the key may name
// a new one. Read errors count as not finished (the stream's
// de-duplication still applies).
func (s *Server) finishedKeyed(job string, now time.Time) bool {
	if !s.finished.enabled() || !s.keyCheckDue(now) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	res, err := s.finished.get(ctx, job)
	return err == nil && res != nil && now.Sub(time.Unix(0, res.ReceivedAt)) < s.cfg.KeyWindow
}

// probeJob asks the jobs stream whether it holds job (queued or running,
// stored within the de-duplication window) without storing anything: a
// publish under the job's Nats-Msg-Id that expects an impossible last
// message id. The stream checks the id first: a duplicate PubAck (with the
// job's sequence) says it is there; otherwise the expectation fails and
// nothing is stored. An origin that restarted uses it to answer pending,
// not not_found, for jobs accepted before. Only for a stream that is not
// clustered (see storedJob).
func (s *Server) probeJob(ctx context.Context, job string) (seq uint64, found bool, err error) {
	m := nats.NewMsg(s.cfg.Subjects.Job(s.cfg.ID))
	m.Header.Set(jetstream.MsgIDHeader, broker.JobMsgID(s.cfg.ID, job))
	m.Header.Set(jetstream.ExpectedLastMsgIDHeader, "probe-"+nuid.Next())
	ack, err := s.js.PublishMsg(ctx, m)
	if err == nil {
		if ack.Duplicate {
			return ack.Sequence, true, nil
		}
		// Not possible unless the stream's last message id were ours.
		return 0, false, fmt.Errorf("probe job %s: stored an empty message (seq %d)", job, ack.Sequence)
	}
	if broker.IsWrongLastMsgID(err) {
		return 0, false, nil
	}
	return 0, false, fmt.Errorf("probe job %s: %w", job, err)
}

// storedJob finds a job this process has no entry for (accepted before a
// restart, or by another process of this origin): scheduled in the delayed
// stream, or in the jobs stream within its de-duplication window.
func (s *Server) storedJob(ctx context.Context, job string) (jobRef, bool) {
	if broker.ValidateToken("job id", job) != nil {
		return jobRef{}, false // no job id of ours; not a subject to look up
	}
	if seq, ok := s.scheduledSeq(ctx, job); ok {
		return jobRef{seq: seq, scheduled: true}, true
	}
	if s.nc.ConnectedClusterName() != "" {
		// In a cluster the stream's leader records a message id when it
		// proposes the message, before the expectation fails: a probe
		// would block the id for the de-duplication window.
		return jobRef{}, false
	}
	seq, ok, err := s.probeJob(ctx, job)
	if err != nil {
		s.log.Warn().Err(err).Str("job", job).Msg("job lookup")
	}
	return jobRef{seq: seq}, ok
}
