package origin

import (
	"context"
	"time"
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
