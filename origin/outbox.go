package origin

import "sync"

// outbox is a session's send queue: frames waiting for the writer, bounded
// both in frames and in bytes. It holds nothing while idle: its slice grows
// as frames are queued and is dropped once the writer has taken them all, so
// an idle connection costs no queue memory.
//
// Past half of either bound the queue is "high": the session's reader stops
// reading client frames until the writer has drained it below that (read-side
// backpressure), so replies to a client's own frames cannot overflow its
// queue while it reads. A push beyond a bound fails: the client
// does not read at all, and the session is closed.
//
// It is safe for concurrent use.
type outbox struct {
	maxFrames, maxBytes int

	mu     sync.Mutex
	frames [][]byte
	head   int // frames[head:] are queued
	bytes  int

	// drained has a token after the writer took frames: a paused reader
	// looks at the level again. Made by the first reader that pauses
	// (drainedChan), so an idle session holds no channel for it.
	drained chan struct{}
}

func newOutbox(maxFrames, maxBytes int) *outbox {
	return &outbox{maxFrames: maxFrames, maxBytes: maxBytes}
}

// drainedChan returns the channel that gets a token whenever the writer
// took frames, making it on first use. A reader gets it before it looks at
// the queue's level, so that no take in between goes unnoticed.
func (o *outbox) drainedChan() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.drained == nil {
		o.drained = make(chan struct{}, 1)
	}
	return o.drained
}

// push queues frame. It returns false, queueing nothing, when the frame
// would take the queue past either bound. A single frame larger than the
// byte bound is still queued into an empty queue, so that one large result
// can always be delivered to a client that reads.
func (o *outbox) push(frame []byte) bool {
	o.mu.Lock()
	n := len(o.frames) - o.head
	if n > 0 && (n+1 > o.maxFrames || o.bytes+len(frame) > o.maxBytes) {
		o.mu.Unlock()
		return false
	}
	o.frames = append(o.frames, frame)
	o.bytes += len(frame)
	o.mu.Unlock()
	return true
}

// take removes queued frames, in order, up to maxBytes in all (at least one
// frame), appends them to dst and returns it; with nothing queued it returns
// dst unchanged. It wakes a paused reader. Once the queue is empty its
// memory is released.
func (o *outbox) take(dst [][]byte, maxBytes int) [][]byte {
	o.mu.Lock()
	n := 0
	for o.head < len(o.frames) {
		f := o.frames[o.head]
		if n > 0 && n+len(f) > maxBytes {
			break
		}
		dst = append(dst, f)
		o.frames[o.head] = nil
		o.head++
		n += len(f)
		o.bytes -= len(f)
	}
	if o.head == len(o.frames) {
		o.frames, o.head = nil, 0
	}
	drained := o.drained
	o.mu.Unlock()
	if n > 0 && drained != nil {
		select {
		case drained <- struct{}{}:
		default:
		}
	}
	return dst
}

// size returns the frames and bytes queued.
func (o *outbox) size() (frames, bytes int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.frames) - o.head, o.bytes
}

// clear drops every queued frame and releases the queue's memory: a closed
// session's frames will never be written, and the session itself may stay
// referenced a while (by jobs it waits for).
func (o *outbox) clear() {
	o.mu.Lock()
	o.frames, o.head, o.bytes = nil, 0, 0
	o.mu.Unlock()
}
