package loadgen

import (
	"fmt"
	"strconv"
)

// Frames are read and written with package client/wire, the one
// implementation of the client side of the protocol; this file holds the
// load generator's own request ids.

// requestID is the decoded form of the ids the engine puts on start-fetch
// frames: "c<conn>.<slot>.<seq>".
type requestID struct {
	conn, slot int
	seq        uint64
}

// appendRequestID appends the wire form of id to b.
func appendRequestID(b []byte, conn, slot int, seq uint64) []byte {
	b = append(b, 'c')
	b = strconv.AppendInt(b, int64(conn), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(slot), 10)
	b = append(b, '.')
	return strconv.AppendUint(b, seq, 10)
}

// parseRequestID decodes an id made by appendRequestID without allocating.
func parseRequestID(b []byte) (requestID, error) {
	var id requestID
	if len(b) < 6 || b[0] != 'c' {
		return id, fmt.Errorf("foreign id %q", b)
	}
	var parts [3]uint64
	p, digits := 0, 0
	for _, c := range b[1:] {
		switch {
		case c >= '0' && c <= '9':
			if digits >= 19 {
				return id, fmt.Errorf("foreign id %q", b)
			}
			parts[p] = parts[p]*10 + uint64(c-'0')
			digits++
		case c == '.' && p < 2 && digits > 0:
			p++
			digits = 0
		default:
			return id, fmt.Errorf("foreign id %q", b)
		}
	}
	if p != 2 || digits == 0 {
		return id, fmt.Errorf("foreign id %q", b)
	}
	id.conn, id.slot, id.seq = int(parts[0]), int(parts[1]), parts[2]
	return id, nil
}
