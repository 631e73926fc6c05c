package origin

import (
	"bufio"
	"encoding/binary"
	"io"
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
// write, plus pings, pongs and finally the close frame.
func (c *session) writeLoop() {
	defer c.srv.sessWG.Done()
	defer c.conn.Close()
	raw := c.conn.NetConn()
	bw := bufio.NewWriterSize(raw, writeBatchBytes)
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	wt := c.srv.cfg.WriteTimeout
	flush := func() bool {
		_ = raw.SetWriteDeadline(time.Now().Add(wt))
		if err := bw.Flush(); err != nil {
			c.log.Debug().Err(err).Msg("write")
			c.close(websocket.CloseAbnormalClosure, "")
			return false
		}
		return true
	}
	// batch writes frame and every frame already queued behind it.
	batch := func(frame []byte) bool {
		_ = raw.SetWriteDeadline(time.Now().Add(wt))
		if err := writeFrame(bw, opText, frame); err != nil {
			c.close(websocket.CloseAbnormalClosure, "")
			return false
		}
		for bw.Buffered() < writeBatchBytes {
			select {
			case f := <-c.send:
				if err := writeFrame(bw, opText, f); err != nil {
					c.close(websocket.CloseAbnormalClosure, "")
					return false
				}
				continue
			default:
			}
			break
		}
		return flush()
	}
	for {
		select {
		case frame := <-c.send:
			if !batch(frame) {
				return
			}
		case data := <-c.pongs:
			if writeFrame(bw, opPong, data) != nil || !flush() {
				return
			}
		case <-ping.C:
			if writeFrame(bw, opPing, nil) != nil || !flush() {
				return
			}
		case <-c.done:
			c.mu.Lock()
			code, reason := c.closeCode, c.closeReason
			c.mu.Unlock()
			if code == websocket.CloseAbnormalClosure {
				return // the connection failed: nothing more can be written
			}
			// Flush what is queued (the final frames of a drain), then close;
			// a client dropped for being too slow gets no flush.
			if code != websocket.ClosePolicyViolation {
				for {
					select {
					case frame := <-c.send:
						if writeFrame(bw, opText, frame) != nil {
							return
						}
						continue
					default:
					}
					break
				}
			}
			_ = raw.SetWriteDeadline(time.Now().Add(time.Second))
			if writeFrame(bw, opClose, websocket.FormatCloseMessage(code, reason)) == nil && bw.Flush() == nil {
				// Give the client a moment to answer the close before the
				// socket goes away (a reset could destroy the close frame).
				_ = raw.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
				_, _ = io.Copy(io.Discard, io.LimitReader(raw, 1<<16))
			}
			return
		}
	}
}
