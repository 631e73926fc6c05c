package loadgen

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Frame types of PROTOCOL.md §1 that the load generator reads.
const (
	frameHello    = "hello"
	frameEnqueued = "enqueued"
	frameResult   = "result"
	frameError    = "error"
)

// errBadFrame reports a frame that is not a JSON object the scanner can read.
var errBadFrame = errors.New("malformed frame")

// frame holds the few fields of an origin → client frame that the load
// generator needs. String fields alias the read buffer and are valid only
// until the next frame is read into it.
type frame struct {
	typ     []byte
	id      []byte
	code    []byte
	message []byte
	origin  []byte
	version []byte
	status  int

	hasTiming bool
	timing    frameTiming
}

// frameTiming is the `timing` object of a result frame, in milliseconds.
type frameTiming struct {
	enqueue, queue, fetch, total float64
}

func (f *frame) reset() { *f = frame{} }

// parseFrame reads the fields the load generator uses from one JSON object and
// skips everything else (bodies, headers) without decoding it. It allocates
// only for strings that contain escape sequences. It reports errBadFrame for
// input that is not a well-formed JSON object.
func parseFrame(b []byte, f *frame) error {
	f.reset()
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return errBadFrame
	}
	s.ws()
	if s.eat('}') {
		return s.end()
	}
	for {
		s.ws()
		key, ok := s.str()
		if !ok {
			return errBadFrame
		}
		s.ws()
		if !s.eat(':') {
			return errBadFrame
		}
		s.ws()
		switch string(key) { // no allocation: compiler-optimised comparison
		case "type":
			f.typ, ok = s.str()
		case "id":
			f.id, ok = s.str()
		case "code":
			f.code, ok = s.str()
		case "message":
			f.message, ok = s.str()
		case "origin":
			f.origin, ok = s.str()
		case "version":
			f.version, ok = s.str()
		case "status":
			var v float64
			v, ok = s.num()
			f.status = int(v)
		case "timing":
			f.hasTiming, ok = s.timing(&f.timing)
		default:
			ok = s.skip(0)
		}
		if !ok {
			return errBadFrame
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			return s.end()
		}
		return errBadFrame
	}
}

// scanner is a minimal JSON reader over one buffer.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return errBadFrame
	}
	return nil
}

// str reads a JSON string and returns its value. Without escapes the value
// aliases the buffer; with escapes it is decoded into a new slice.
func (s *scanner) str() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	escaped := false
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw := s.b[start:s.i]
			s.i++
			if !escaped {
				return raw, true
			}
			var out string
			if err := json.Unmarshal(s.b[start-1:s.i], &out); err != nil {
				return nil, false
			}
			return []byte(out), true
		case c == '\\':
			escaped = true
			s.i += 2
		case c < 0x20:
			return nil, false
		default:
			s.i++
		}
	}
	return nil, false
}

// num reads a JSON number.
func (s *scanner) num() (float64, bool) {
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		if (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E' {
			s.i++
			continue
		}
		break
	}
	if start == s.i {
		return 0, false
	}
	v, err := strconv.ParseFloat(string(s.b[start:s.i]), 64)
	return v, err == nil
}

// timing reads the timing object; unknown members are skipped. found is
// false when the value is not an object (null).
func (s *scanner) timing(t *frameTiming) (found, ok bool) {
	if !s.eat('{') {
		return false, s.skip(0) // null or another type: ignore, but keep scanning
	}
	s.ws()
	if s.eat('}') {
		return true, true
	}
	for {
		s.ws()
		key, ok := s.str()
		if !ok {
			return false, false
		}
		s.ws()
		if !s.eat(':') {
			return false, false
		}
		s.ws()
		var dst *float64
		switch string(key) {
		case "enqueue_ms":
			dst = &t.enqueue
		case "queue_ms":
			dst = &t.queue
		case "fetch_ms":
			dst = &t.fetch
		case "total_ms":
			dst = &t.total
		}
		if dst != nil && s.i < len(s.b) && (s.b[s.i] == '-' || (s.b[s.i] >= '0' && s.b[s.i] <= '9')) {
			*dst, ok = s.num()
		} else {
			ok = s.skip(0)
		}
		if !ok {
			return false, false
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		return true, s.eat('}')
	}
}

// maxSkipDepth bounds nesting so a hostile frame cannot recurse deeply.
const maxSkipDepth = 64

// skip consumes one JSON value of any type.
func (s *scanner) skip(depth int) bool {
	if depth > maxSkipDepth || s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		_, ok := s.rawStr()
		return ok
	case c == '{' || c == '[':
		closer := byte('}')
		if c == '[' {
			closer = ']'
		}
		s.i++
		s.ws()
		if s.eat(closer) {
			return true
		}
		for {
			s.ws()
			if c == '{' {
				if _, ok := s.rawStr(); !ok {
					return false
				}
				s.ws()
				if !s.eat(':') {
					return false
				}
				s.ws()
			}
			if !s.skip(depth + 1) {
				return false
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			return s.eat(closer)
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	default:
		_, ok := s.num()
		return ok
	}
}

// rawStr consumes a string without decoding escapes.
func (s *scanner) rawStr() ([]byte, bool) {
	if !s.eat('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\':
			s.i += 2
		case c < 0x20:
			return nil, false
		default:
			s.i++
		}
	}
	return nil, false
}

func (s *scanner) lit(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

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
