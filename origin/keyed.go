package origin

import (
	"context"
	"fmt"
	"sync"
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
// still holds, and a finished job's message is gone. So for one key window
// after this origin started, or after its connection to NATS was
// re-established (the server may have restarted), a keyed start-fetch must
// also know whether its key's job finished before: the origin lists the
// key-named jobs in the finished-results store once, in the background, and
// looks keys up in that set (a store read per keyed fetch only until the
// list is in, and for the rare key found in it). After the window the
// stream's own state covers every key again and the set is dropped.

// priorKeys is the set of key-named jobs that had finished when the
// origin (re)connected, loaded once per window.
type priorKeys struct {
	mu     sync.Mutex
	until  time.Time // end of the key window the check covers
	recon  uint64    // the connection's reconnect count it was loaded for
	loaded bool
	ids    map[string]struct{}
}

// keyCheckDue reports whether keyed start-fetch frames must check for a
// job that finished before this origin (or its server) restarted. A new
// reconnect opens a new window and reloads the set.
func (s *Server) keyCheckDue(now time.Time) bool {
	r := s.nc.Stats().Reconnects
	p := &s.prior
	p.mu.Lock()
	defer p.mu.Unlock()
	if r != p.recon {
		p.recon, p.until, p.loaded, p.ids = r, now.Add(s.cfg.KeyWindow), false, nil
		s.loadPriorKeys(r)
	}
	if now.After(p.until) {
		p.ids = nil
		return false
	}
	return true
}

// loadPriorKeys lists, in the background, the key-named jobs of this origin
// in the finished-results store, for the window of reconnect count recon.
// On failure the window keeps reading the store per keyed fetch. An origin
// in its own account cannot list the shared results stream's subjects (the
// listing is not filtered by permissions): it reads per keyed fetch.
func (s *Server) loadPriorKeys(recon uint64) {
	if !s.finished.enabled() || s.cfg.OwnAccount != nil {
		return
	}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(s.bgCtx, time.Minute)
		defer cancel()
		ids, err := s.listKeyed(ctx)
		if err != nil {
			s.log.Warn().Err(err).Msg("listing finished keyed jobs; keyed fetches read the store until the key window ends")
			return
		}
		p := &s.prior
		p.mu.Lock()
		if p.recon == recon {
			p.ids, p.loaded = ids, true
		}
		p.mu.Unlock()
		s.log.Debug().Int("keyed_jobs", len(ids)).Msg("finished keyed jobs listed for the key window")
	}()
}

// finishedKeyed reports whether job, a key's job, finished within the key
// window before this origin (or its server) restarted, so that the stream
// may have forgotten it. A result older than the window belongs to an
// earlier job under the same key: the key may name a new one. Read errors
// count as not finished (the stream's de-duplication still applies).
func (s *Server) finishedKeyed(job string, now time.Time) bool {
	if !s.finished.enabled() || !s.keyCheckDue(now) {
		return false
	}
	p := &s.prior
	p.mu.Lock()
	_, listed := p.ids[job]
	loaded := p.loaded
	p.mu.Unlock()
	if loaded && !listed {
		return false // finished since: the stream remembers it
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

// listKeyed returns the key-named jobs with a result kept in the results
// stream: the subjects of this origin's records on both lanes (one per
// job).
func (s *Server) listKeyed(ctx context.Context) (map[string]struct{}, error) {
	st, err := s.js.Stream(ctx, broker.ResultsStream)
	if err != nil {
		return nil, fmt.Errorf("list keyed jobs: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(s.cfg.Subjects.RecordsFilter(s.cfg.ID)))
	if err != nil {
		return nil, fmt.Errorf("list keyed jobs: %w", err)
	}
	ids := make(map[string]struct{})
	for subj := range info.State.Subjects {
		if id, ok := s.cfg.Subjects.RecordJob(s.cfg.ID, subj); ok && broker.IsKeyJobID(id) {
			ids[id] = struct{}{}
		}
	}
	return ids, nil
}
