package origin

import (
	"context"
	"sync"
	"time"

	"github.com/pipeline-dev/pipeline/broker"
)

// maxAttachPerJob bounds the connections waiting on one job's result.
const maxAttachPerJob = 64

// Job states a pending frame reports (PROTOCOL.md §1.1).
const (
	stateQueued    = "queued"
	stateRunning   = "running"
	stateScheduled = "scheduled"
)

// inflight is the origin's index of its accepted jobs that have no final
// result yet, and of the connections attached to them by get-result: a
// get-result for such a job answers `pending`, and the attached connection
// gets the final frame when it comes. Entries live from the start-fetch to
// the result (or the failure to store the job), also after the connection
// that started the job closed. Safe for concurrent use.
type inflight struct {
	mu   sync.Mutex
	jobs map[string]*inflightJob
}

type inflightJob struct {
	// seq is the job's sequence in the jobs stream, once stored (0 before),
	// or in the delayed stream while scheduled.
	seq       uint64
	scheduled bool
	// followed marks an entry made only for connections waiting on a job
	// this process did not start (a duplicate key, a job from before a
	// restart): it goes when its last attachment does.
	followed bool
	// owner is the id of the session that started the job ("" once the
	// entry only follows), received when its frame came. An id, not the
	// session: a closed session's memory must not live on with its jobs.
	owner    string
	received time.Time
	attached []attachment
}

// attachment is a connection waiting for a job's final frame, under the id
// of its get-result.
type attachment struct {
	sess *session
	id   string
}

// add records an accepted job. It reports false, recording nothing, when
// the job is in flight already (a key-derived id started by another
// connection of this process).
func (f *inflight) add(job, owner string, received time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.jobs == nil {
		f.jobs = make(map[string]*inflightJob)
	}
	if j, ok := f.jobs[job]; ok && !j.followed {
		return false
	} else if ok {
		j.followed = false // this process now owns it: its result clears the entry
		j.owner, j.received = owner, received
		return true
	}
	f.jobs[job] = &inflightJob{owner: owner, received: received}
	return true
}

// stored records the job's stream sequence: in the delayed stream while
// scheduled, then in the jobs stream.
func (f *inflight) stored(job string, seq uint64, scheduled bool) {
	f.mu.Lock()
	if j := f.jobs[job]; j != nil {
		j.seq, j.scheduled = seq, scheduled
	}
	f.mu.Unlock()
}

// remove forgets a job and returns the connections attached to it.
func (f *inflight) remove(job string) []attachment {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[job]
	if j == nil {
		return nil
	}
	delete(f.jobs, job)
	return j.attached
}

// attach adds a connection waiting for job. It reports whether the job is
// in flight (then seq is its stream sequence, 0 while it is being stored)
// and whether the attachment was taken (false beyond maxAttachPerJob). With
// follow, a job not in flight here gets an entry (found is then false, taken
// true): the caller knows the job exists elsewhere.
func (f *inflight) attach(job string, a attachment, follow bool) (st jobRef, found, taken bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[job]
	if j == nil {
		if !follow {
			return jobRef{}, false, false
		}
		if f.jobs == nil {
			f.jobs = make(map[string]*inflightJob)
		}
		f.jobs[job] = &inflightJob{followed: true, attached: []attachment{a}}
		return jobRef{}, false, true
	}
	ref := jobRef{seq: j.seq, scheduled: j.scheduled}
	if len(j.attached) >= maxAttachPerJob {
		return ref, true, false
	}
	j.attached = append(j.attached, a)
	return ref, true, true
}

// detach removes attachment a of job and reports whether it was still
// there (not served yet).
func (f *inflight) detach(job string, a attachment) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[job]
	if j == nil {
		return false
	}
	for i, x := range j.attached {
		if x == a {
			j.attached = append(j.attached[:i], j.attached[i+1:]...)
			if j.followed && len(j.attached) == 0 {
				delete(f.jobs, job)
			}
			return true
		}
	}
	return false
}

// disown turns job's entry into one that only follows the job (it was
// stored before by another process or an earlier run): it goes with its
// last attachment or with the job's result.
func (f *inflight) disown(job string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if j := f.jobs[job]; j != nil {
		j.followed, j.owner = true, ""
		if len(j.attached) == 0 {
			delete(f.jobs, job)
		}
	}
}

// lookup returns where job is stored, its owner and when its frame came,
// and whether it is in flight here.
func (f *inflight) lookup(job string) (ref jobRef, owner string, received time.Time, found bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[job]
	if j == nil {
		return jobRef{}, "", time.Time{}, false
	}
	return jobRef{seq: j.seq, scheduled: j.scheduled}, j.owner, j.received, true
}

// finishJob ends a job in the index and sends its final frame to every
// connection attached to it.
func (s *Server) finishJob(res *broker.Result) {
	for _, a := range s.inflight.remove(res.JobID) {
		a.sess.attached.Add(-1)
		a.sess.queueFinal(a.id, res)
	}
}

// jobRef is where an in-flight job is stored.
type jobRef struct {
	seq       uint64
	scheduled bool
}

// jobState tells whether the job stored at ref is scheduled (delayed), still
// waiting for an executor, or was handed to one (from this origin's jobs
// consumer). Unknown (seq 0, or the consumer cannot be read) counts as
// queued.
func (s *Server) jobState(ctx context.Context, ref jobRef) string {
	if ref.scheduled {
		return stateScheduled
	}
	seq := ref.seq
	if seq == 0 {
		return stateQueued
	}
	cons, err := s.js.Consumer(ctx, broker.JobsStream, broker.JobsConsumer(s.cfg.ID))
	if err != nil {
		return stateQueued
	}
	info, err := cons.Info(ctx)
	if err != nil || info.Delivered.Stream < seq {
		return stateQueued
	}
	return stateRunning
}
