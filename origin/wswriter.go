package origin

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"time"

	"github.com/gorilla/websocket"
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
// reader goroutine (pong, close echo) through the writer instead.
func (c *session) installControlHandlers() {
	c.conn.SetPingHandler(func(data string) error {
		select {
		case c.pongs <- []byte(data):
		default: // a flood of pings: answering the latest is enough
		}
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

// writeLoop writes queued frames, batching whatever is queued into one
// write, plus pings, pongs and finally the close frame. Its buffered writer
// comes from the server's pool only while there is something to write, so
// an idle session holds no write buffer.
func (c *session) writeLoop() {
	defer c.srv.sessWG.Done()
	raw := c.conn.NetConn()
	defer c.closeConn(raw)
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	wt := c.srv.cfg.WriteTimeout
	var bw *bufio.Writer
	writer := func() *bufio.Writer {
		if bw == nil {
			bw = c.srv.writers.Get().(*bufio.Writer)
			bw.Reset(raw)
		}
		return bw
	}
	release := func() {
		if bw != nil {
			bw.Reset(nil)
			c.srv.writers.Put(bw)
			bw = nil
		}
	}
	defer release()
	fail := func(err error) {
		c.log.Debug().Err(err).Msg("write")
		c.close(websocket.CloseAbnormalClosure, "")
	}
	flush := func() bool {
		_ = raw.SetWriteDeadline(time.Now().Add(wt))
		if err := writer().Flush(); err != nil {
			fail(err)
			return false
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
					fail(err)
					return false
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
		case <-c.out.ready:
			if !drain() {
				return
			}
			release()
		case data := <-c.pongs:
			if writeFrame(writer(), opPong, data) != nil || !flush() {
				return
			}
			release()
		case <-ping.C:
			if writeFrame(writer(), opPing, nil) != nil || !flush() {
				return
			}
			release()
		case <-c.done:
			c.mu.Lock()
			code, reason := c.closeCode, c.closeReason
			c.mu.Unlock()
			if code == websocket.CloseAbnormalClosure {
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
			return
		}
	}
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
