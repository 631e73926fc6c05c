package origin

import (
	"time"

	"github.com/pipeline-dev/pipeline/broker"
)

// observe records one finished fetch in the metrics: its outcome and the
// four phase latencies the client is told in t.
func (s *Server) observe(res *broker.Result, t Timing) {
	if s.m == nil {
		return
	}
	if res.Error != nil {
		s.m.Error(res.Error.Code)
	} else {
		s.m.Result()
	}
	s.m.Phases(msDuration(t.EnqueueMS), msDuration(t.QueueMS), msDuration(t.FetchMS), msDuration(t.TotalMS))
}

// msDuration converts milliseconds back to a Duration.
func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
