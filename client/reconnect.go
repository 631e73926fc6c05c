package client

import (
	"math/rand/v2"
	"time"

	"github.com/pipeline-dev/pipeline/client/wire"
)

// reconnect marks the client disconnected, fails the cancels waiting on the
// lost connection, and dials with exponential backoff until it connects
// (then re-attaches the open fetches and returns the new connection) or the
// client is closed (then it returns nil). Past the reconnect timeout it
// fails the open fetches with ErrDisconnected and keeps trying.
func (c *Client) reconnect() *conn {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.cn = nil
	c.up = make(chan struct{})
	for id, ch := range c.ctl {
		ch <- ctlReply{err: ErrConnectionLost}
		delete(c.ctl, id)
	}
	c.mu.Unlock()

	giveUp := time.NewTimer(c.opts.reconnectTimeout)
	defer giveUp.Stop()
	wait := c.opts.minBackoff
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			// Up to 50% jitter, so that many clients cut at once do not
			// come back in lockstep.
			d := wait/2 + rand.N(wait/2+1)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-giveUp.C:
				t.Stop()
				c.failOpen()
				continue // and keep trying
			case <-c.ctx.Done():
				t.Stop()
				return nil
			}
			wait = min(2*wait, c.opts.maxBackoff)
		}
		cn, hello, err := c.dial(c.ctx)
		if err != nil {
			if c.ctx.Err() != nil {
				return nil
			}
			continue
		}
		frames, ok := c.attach(cn, hello)
		if !ok {
			_ = cn.ws.Close()
			return nil
		}
		// The frames go out on their own goroutine while the caller reads:
		// a reader that wrote a thousand frames first could fill the
		// origin's send queue with unread replies, and the origin stops
		// reading a client whose queue is past half full.
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for _, b := range frames {
				if cn.write(b, c.opts.writeTimeout) != nil {
					return // the reader sees the closed socket; the next attach re-sends
				}
			}
		}()
		return cn
	}
}

// failOpen fails every open fetch with ErrDisconnected and makes new calls
// fail the same way until the client reconnects.
func (c *Client) failOpen() {
	c.mu.Lock()
	c.gaveUp = true
	open := make([]*Pending, 0, len(c.byID))
	for _, p := range c.byID {
		open = append(open, p)
	}
	clear(c.byID)
	c.mu.Unlock()
	for _, p := range open {
		p.finish(nil, ErrDisconnected)
	}
}

// attach makes cn the client's connection and re-attaches every open
// fetch on it under a new frame id: one the origin confirmed is asked for by
// key, one it did not confirm is sent again with the same key (the origin
// de-duplicates it). It returns the frames to send, and false when the
// client was closed meanwhile.
func (c *Client) attach(cn *conn, hello Hello) ([][]byte, bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, false
	}
	frames := make([][]byte, 0, len(c.byID))
	var failed []*Pending
	byID := make(map[string]*Pending, len(c.byID))
	for _, p := range c.byID {
		id := c.newID()
		var (
			b   []byte
			err error
		)
		if p.confirmed || p.attach {
			gr := wire.GetResult{ID: id, Key: p.key}
			b, err = gr.Encode()
		} else {
			p.sf.ID = id
			b, err = p.sf.Encode()
		}
		if err != nil {
			failed = append(failed, p)
			continue
		}
		p.id = id
		byID[id] = p
		frames = append(frames, b)
	}
	c.byID = byID
	c.cn, c.hello, c.gaveUp = cn, hello, false
	close(c.up)
	c.mu.Unlock()
	for _, p := range failed {
		p.finish(nil, ErrDisconnected)
	}
	return frames, true
}
