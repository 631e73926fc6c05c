package origin

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// The session writer frames server→client WebSocket messages itself (they are
// unmasked and uncompressed, RFC 6455 §5.2) so that it can put every frame
// that is queued into one buffered write: under load one syscall carries
// dozens of frames instead of one each. All writes to the connection happen
// on the writer goroutine: pings, pongs (the ping handler hands them over)
// and the close frame included. Gorilla still reads and parses client frames.

const (
	opText  = 0x1
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA

	// writeBatchBytes bounds one batch; a frame larger than it goes alone.
	writeBatchBytes = 64 << 10
)

// writeFrame writes one final (FIN) frame with the given opcode.
func writeFrame(w *bufio.Writer, opcode byte, payload []byte) error {
	var hdr [10]byte
	hdr[0] = 0x80 | opcode
	n := len(payload)
	h := 2
	switch {
	case n < 126:
		hdr[1] = byte(n)
	case n <= 0xFFFF:
		hdr[1] = 126
		binary.BigEndian.PutUint16(hdr[2:], uint16(n))
		h = 4
	default:
		hdr[1] = 127
		binary.BigEndian.PutUint64(hdr[2:], uint64(n))
		h = 10
	}
	if _, err := w.Write(hdr[:h]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

// installControlHandlers routes the replies gorilla would write from the
// reader goroutine (pong, close echo) through the writer instead. A pong
// from the client extends the read deadline, also on the writer: the
// handlers run deep inside gorilla's NextReader, where setting a deadline
// (a runtime timer) would grow the idle reader's stack past 2 KB
// (readLoop).
func (c *session) installControlHandlers() {
	c.conn.SetPongHandler(func(string) error {
		c.ponged.Store(true)
		c.wake()
		return nil
	})
	c.conn.SetPingHandler(func(data string) error {
		// A flood of pings: the one waiting is answered, later ones
		// meanwhile get no pong of their own.
		c.pong.CompareAndSwap(nil, &data)
		c.wake()
		return nil
	})
	c.conn.SetCloseHandler(func(code int, text string) error {
		if code == websocket.CloseNoStatusReceived {
			code = websocket.CloseNormalClosure
		}
		c.close(code, "")
		return nil
	})
}

// Writer states (session.writer).
const (
	writerIdle     int32 = iota // no writer goroutine
	writerRunning               // a writer goroutine runs
	writerFinished              // the close frame was written (or the conn failed)
)

// wake makes sure a writer goroutine runs to write what is pending:
// queued frames, a pong, a ping, or the close frame. A session holds no
// writer goroutine while it has nothing to write, so an idle connection
// costs one goroutine (its reader), not two. Callers hold a count of
// srv.sessWG (they run on the session's reader or ack loop, or the session
// is still registered with the server), so the Add cannot race its Wait.
func (c *session) wake() {
	if c.writer.CompareAndSwap(writerIdle, writerRunning) {
		c.srv.sessWG.Add(1)
		go c.writeLoop()
	}
}

// hasWork reports whether the writer has something to write.
func (c *session) hasWork() bool {
	if n, _ := c.out.size(); n > 0 || c.pong.Load() != nil || c.ponged.Load() || c.pingDue.Load() {
		return true
	}
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// writeLoop writes what is pending, batching whatever is queued into one
// write, plus pings, pongs and finally the close frame; it returns when it
// has nothing left to write (wake starts it again) or the session is over.
// Its buffered writer comes from the server's pool only while writing.
func (c *session) writeLoop() {
	defer c.srv.sessWG.Done()
	raw := c.conn.NetConn()
	wt := c.srv.cfg.WriteTimeout
	var bw *bufio.Writer
	writer := func() *bufio.Writer {
		if bw == nil {
			bw = c.srv.writers.Get().(*bufio.Writer)
			bw.Reset(raw)
		}
		return bw
	}
	defer func() {
		if bw != nil {
			bw.Reset(nil)
			c.srv.writers.Put(bw)
		}
	}()
	failed := false
	fail := func(err error) bool {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			c.writeTimedOut()
		} else {
			c.logAt(zerolog.DebugLevel).Err(err).Msg("write")
		}
		c.close(websocket.CloseAbnormalClosure, "") // no-op once closed above
		failed = true
		return false
	}
	flush := func() bool {
		_ = raw.SetWriteDeadline(time.Now().Add(wt))
		if err := writer().Flush(); err != nil {
			return fail(err)
		}
		return true
	}
	var batch [][]byte
	// drain writes every queued frame, one buffered write per batch.
	drain := func() bool {
		for {
			batch = c.out.take(batch[:0], writeBatchBytes)
			if len(batch) == 0 {
				return true
			}
			_ = raw.SetWriteDeadline(time.Now().Add(wt))
			for _, f := range batch {
				if err := writeFrame(writer(), opText, f); err != nil {
					return fail(err)
				}
			}
			clear(batch)
			if !flush() {
				return false
			}
		}
	}
	for {
		select {
		case <-c.done:
			c.finishWriting(raw, writer, drain, failed)
			return
		default:
		}
		if c.ponged.Swap(false) {
			c.extendReadDeadline()
		}
		if data := c.pong.Swap(nil); data != nil {
			if writeFrame(writer(), opPong, []byte(*data)) != nil || !flush() {
				continue // failed: the session is closing
			}
		}
		if c.pingDue.Swap(false) && (writeFrame(writer(), opPing, nil) != nil || !flush()) {
			continue
		}
		if !drain() {
			continue
		}
		// Nothing left: stop, unless something came meanwhile (its waker
		// saw this writer running and started none).
		if bw != nil {
			bw.Reset(nil)
			c.srv.writers.Put(bw)
			bw = nil
		}
		c.writer.Store(writerIdle)
		if !c.hasWork() || !c.writer.CompareAndSwap(writerIdle, writerRunning) {
			return
		}
	}
}

// extendReadDeadline gives the client pongWait more to send a frame or a
// pong, unless the session is closing (closeLocked set the deadline to now
// to end the reader).
func (c *session) extendReadDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		_ = c.conn.SetReadDeadline(time.Now().Add(pongWait))
	}
}

// finishWriting writes the close frame (after what is queued, unless the
// client was dropped for not reading) and closes the connection; the
// session's writing is then over for good.
func (c *session) finishWriting(raw net.Conn, writer func() *bufio.Writer, drain func() bool, failed bool) {
	c.writer.Store(writerFinished)
	defer c.out.clear()
	defer c.closeConn(raw)
	c.mu.Lock()
	code, reason := c.closeCode, c.closeReason
	c.mu.Unlock()
	if failed || code == websocket.CloseAbnormalClosure {
		return // the connection failed: nothing more can be written
	}
	// Flush what is queued (the final frames of a drain), then close;
	// a client dropped for being too slow gets no flush.
	if code != websocket.ClosePolicyViolation && !drain() {
		return
	}
	_ = raw.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeFrame(writer(), opClose, websocket.FormatCloseMessage(code, reason))
	_ = writer().Flush()
}

// closeConn closes the socket without a TCP reset. Frames the client sent
// that nobody read (the reader paused, or stopped) would make the kernel
// answer the close with RST, which destroys what the client has not read
// yet, the close frame included; so what is pending is read and dropped
// first, for at most 250 ms and 1 MiB. This also gives a client a moment to
// answer a close frame.
func (c *session) closeConn(raw net.Conn) {
	_ = raw.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
	_, _ = io.Copy(io.Discard, io.LimitReader(raw, 1<<20))
	_ = c.conn.Close()
}
