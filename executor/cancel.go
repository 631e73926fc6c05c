package executor

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

// maxCancelMarks bounds the cancel marks an executor remembers (the stream
// holds at most 64 MiB of them); beyond it the oldest are forgotten.
const maxCancelMarks = 1 << 20

// cancels follows the cancel marks of broker.CancelsStream: a marked job
// is acknowledged without a fetch when it is handed to this executor, and a
// running one has its fetch aborted. Its origin has already sent the job's
// final frame (canceled). Safe for concurrent use.
type cancels struct {
	mu      sync.Mutex
	marks   map[string]struct{}
	order   []string
	running map[string]context.CancelFunc
	cc      jetstream.ConsumeContext
}

func cancelKey(originID, jobID string) string { return originID + "." + jobID }

// startCancels follows the cancel marks from the start of the stream. A
// store provisioned by an older version has no cancels stream: then jobs
// cannot be canceled while queued or running (the origin still answers its
// clients), which is logged.
func (e *Executor) startCancels(ctx context.Context) error {
	cons, err := e.js.OrderedConsumer(ctx, broker.CancelsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{e.cfg.Subjects.CancelsWildcard()},
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		e.log.Warn().Msg("no cancels stream (provisioned by an older version): canceled jobs still run")
		return nil
	}
	if err != nil {
		return fmt.Errorf("follow cancel marks: %w", err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		if o, j, ok := e.cfg.Subjects.CancelOf(msg.Subject()); ok {
			e.cancels.mark(cancelKey(o, j))
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, jetstream.ErrNoHeartbeat) {
			e.log.Debug().Err(err).Msg("cancel marks consume")
		}
	}))
	if err != nil {
		return fmt.Errorf("follow cancel marks: %w", err)
	}
	e.cancels.cc = cc
	return nil
}

// mark records a cancel and aborts the job if it runs here.
func (c *cancels) mark(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.marks == nil {
		c.marks = make(map[string]struct{})
	}
	if _, ok := c.marks[key]; !ok {
		c.marks[key] = struct{}{}
		c.order = append(c.order, key)
		if len(c.order) > maxCancelMarks {
			delete(c.marks, c.order[0])
			c.order = c.order[1:]
		}
	}
	if stop := c.running[key]; stop != nil {
		stop()
	}
}

// canceled reports whether key (cancelKey) was canceled.
func (c *cancels) canceled(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.marks[key]
	return ok
}

// run returns a context for running job key, canceled when its cancel mark
// arrives (at once if it has), and the func that ends the run.
func (c *cancels) run(parent context.Context, key string) (context.Context, func()) {
	ctx, stop := context.WithCancel(parent)
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.marks[key]; ok {
		stop()
		return ctx, func() {}
	}
	if c.running == nil {
		c.running = make(map[string]context.CancelFunc)
	}
	c.running[key] = stop
	return ctx, func() {
		c.mu.Lock()
		delete(c.running, key)
		c.mu.Unlock()
		stop()
	}
}

func (c *cancels) stop() {
	if c.cc != nil {
		c.cc.Stop()
	}
}
