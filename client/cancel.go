package client

import (
	"context"

	"github.com/pipeline-dev/pipeline/client/wire"
)

// Ref names a job for Cancel: a Job id or a Key.
type Ref interface{ ref() wire.Cancel }

// Job is a job id, as in Result.Job and Pending.Job.
type Job string

// Key is an idempotency key, as in Request.Key and Pending.Key.
type Key string

func (j Job) ref() wire.Cancel { return wire.Cancel{Job: string(j)} }
func (k Key) ref() wire.Cancel { return wire.Cancel{Key: string(k)} }

// Cancel asks the origin to cancel a job (PROTOCOL.md §1.1). It returns nil
// when the origin canceled it: the job's fetch then finishes with an *Error
// of CodeCanceled (a running fetch is aborted, but its request may already
// have reached the destination). Otherwise it returns an *Error with
// CodeAlreadyFinished (the job has its final result) or CodeNotFound
// (unknown job or key), ErrConnectionLost when the connection dropped before
// the answer (cancelling again is safe), ctx's error, ErrClosed, or
// ErrDisconnected. While the client reconnects, Cancel waits (bounded by
// ctx).
func (c *Client) Cancel(ctx context.Context, r Ref) error {
	if r == nil {
		return &Error{Code: CodeBadRequest, Message: "nil Ref"}
	}
	f := r.ref()
	if !wire.ValidID(f.Job + f.Key) {
		return &Error{Code: CodeBadRequest, Message: "job id or key must be 1..128 printable ASCII characters"}
	}
	for {
		cn, err := c.waitUp(ctx)
		if err != nil {
			return err
		}
		ch := make(chan ctlReply, 1)
		c.mu.Lock()
		if c.cn != cn {
			c.mu.Unlock()
			continue // dropped meanwhile: wait for the next connection
		}
		f.ID = c.newID()
		c.ctl[f.ID] = ch
		c.mu.Unlock()
		b, err := f.Encode()
		if err == nil {
			_ = cn.write(b, c.opts.writeTimeout) // a failure shows as ErrConnectionLost
		} else {
			c.reply(f.ID, ctlReply{err: err})
		}
		select {
		case r := <-ch:
			return r.err
		case <-ctx.Done():
			c.mu.Lock()
			delete(c.ctl, f.ID)
			c.mu.Unlock()
			return ctx.Err()
		}
	}
}
