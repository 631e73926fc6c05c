package wire

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ErrBadFrame reports a frame that is not a JSON object the decoder can read,
// or a known field holding a value of the wrong type.
var ErrBadFrame = errors.New("wire: malformed frame")

// Frame holds the fields of an origin → client frame. Byte fields alias the
// buffer given to Parse (unless the value had escapes) and are valid only
// until that buffer is reused; nil means absent.
type Frame struct {
	Type     []byte
	ID       []byte
	Job      []byte
	Code     []byte
	Message  []byte
	Origin   []byte // hello
	Version  []byte // hello
	State    []byte // pending: queued, scheduled or running
	Executor []byte

	// Status is the target's HTTP status of a result frame.
	Status  int
	Attempt int
	// Truncated is set when the executor cut the body at its limit.
	Truncated bool
	// Duplicate is set on an enqueued frame whose key was already known.
	Duplicate bool

	// BodyEncoding is utf8 or base64.
	BodyEncoding []byte
	// RawBody is the body's JSON string content between the quotes, escapes
	// not decoded; BodyEscaped tells whether it has any. Use DecodeBody.
	RawBody     []byte
	BodyEscaped bool
	// RawHeaders is the headers member as raw JSON (an object), or nil.
	// Use DecodeHeaders.
	RawHeaders []byte

	// HasTiming is set when the frame has a timing object.
	HasTiming bool
	Timing    Timing
}

// Timing is a result frame's timing object, in milliseconds.
type Timing struct {
	EnqueueMS, QueueMS, FetchMS, TotalMS, DelayMS float64
}

// Reset clears every field.
func (f *Frame) Reset() { *f = Frame{} }

// Is reports whether the frame's type is typ, without allocating.
func (f *Frame) Is(typ string) bool { return string(f.Type) == typ }

// DecodeBody returns the result body: JSON escapes decoded, then base64
// decoded when BodyEncoding says so. The slice never aliases the parse
// buffer. It fails when the body is not a valid encoding.
func (f *Frame) DecodeBody() ([]byte, error) {
	var s []byte
	if f.BodyEscaped {
		q := make([]byte, 0, len(f.RawBody)+2)
		q = append(append(append(q, '"'), f.RawBody...), '"')
		var v string
		if err := json.Unmarshal(q, &v); err != nil {
			return nil, fmt.Errorf("wire: body: %w", err)
		}
		s = []byte(v)
	} else {
		s = append([]byte(nil), f.RawBody...)
	}
	switch string(f.BodyEncoding) {
	case "", EncodingUTF8:
		return s, nil
	case EncodingBase64:
		out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
		n, err := base64.StdEncoding.Decode(out, s)
		if err != nil {
			return nil, fmt.Errorf("wire: base64 body: %w", err)
		}
		return out[:n], nil
	default:
		return nil, fmt.Errorf("wire: unknown body_encoding %q", f.BodyEncoding)
	}
}

// DecodeHeaders returns the headers object of a result frame (nil when it
// has none). It fails when headers is not an object of strings.
func (f *Frame) DecodeHeaders() (map[string]string, error) {
	if len(f.RawHeaders) == 0 || string(f.RawHeaders) == "null" {
		return nil, nil
	}
	var h map[string]string
	if err := json.Unmarshal(f.RawHeaders, &h); err != nil {
		return nil, fmt.Errorf("wire: headers: %w", err)
	}
	return h, nil
}

// Parse reads one frame into f, which it resets first. Members it does not
// know are skipped without being decoded. It reports ErrBadFrame for input
// that is not a well-formed JSON object, or a known member of the wrong
// type.
func Parse(b []byte, f *Frame) error {
	f.Reset()
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return ErrBadFrame
	}
	s.ws()
	if s.eat('}') {
		return s.end()
	}
	for {
		s.ws()
		key, ok := s.str()
		if !ok {
			return ErrBadFrame
		}
		s.ws()
		if !s.eat(':') {
			return ErrBadFrame
		}
		s.ws()
		switch string(key) { // no allocation: compiler-optimised comparison
		case "type":
			f.Type, ok = s.str()
		case "id":
			f.ID, ok = s.str()
		case "job":
			f.Job, ok = s.str()
		case "code":
			f.Code, ok = s.str()
		case "message":
			f.Message, ok = s.str()
		case "origin":
			f.Origin, ok = s.str()
		case "version":
			f.Version, ok = s.str()
		case "state":
			f.State, ok = s.str()
		case "executor":
			f.Executor, ok = s.str()
		case "body_encoding":
			f.BodyEncoding, ok = s.str()
		case "body":
			f.RawBody, f.BodyEscaped, ok = s.rawStr()
		case "headers":
			start := s.i
			if ok = s.skip(0); ok {
				f.RawHeaders = s.b[start:s.i]
			}
		case "status":
			f.Status, ok = s.int()
		case "attempt":
			f.Attempt, ok = s.int()
		case "truncated":
			f.Truncated, ok = s.bool()
		case "duplicate":
			f.Duplicate, ok = s.bool()
		case "timing":
			f.HasTiming, ok = s.timing(&f.Timing)
		default:
			ok = s.skip(0)
		}
		if !ok {
			return ErrBadFrame
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			return s.end()
		}
		return ErrBadFrame
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
		return ErrBadFrame
	}
	return nil
}

// str reads a JSON string and returns its value. Without escapes the value
// aliases the buffer; with escapes it is decoded into a new slice.
func (s *scanner) str() ([]byte, bool) {
	start := s.i
	raw, escaped, ok := s.rawStr()
	if !ok || !escaped {
		return raw, ok
	}
	var out string
	if err := json.Unmarshal(s.b[start:s.i], &out); err != nil {
		return nil, false
	}
	return []byte(out), true
}

// rawStr consumes a string without decoding escapes and returns its
// content between the quotes. It is the decoder's hot loop (bodies): it
// works on locals, and a table tells the bytes that need no thought.
func (s *scanner) rawStr() (raw []byte, escaped, ok bool) {
	b, i := s.b, s.i
	if i >= len(b) || b[i] != '"' {
		return nil, false, false
	}
	i++
	start := i
	for i < len(b) {
		c := b[i]
		if plain[c] {
			i++
			continue
		}
		switch {
		case c == '"':
			s.i = i + 1
			return b[start:i], escaped, true
		case c == '\\':
			escaped = true
			i += 2
		default: // a control character
			s.i = i
			return nil, false, false
		}
	}
	s.i = i
	return nil, false, false
}

// plain (read-only) marks the bytes a JSON string may hold as they are: not a quote,
// a backslash or a control character.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

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

// int reads a JSON number as an int; plain non-negative integers of up to
// 9 digits (every status and attempt) take a fast path.
func (s *scanner) int() (int, bool) {
	n, d := 0, 0
	for j := s.i; j < len(s.b) && d < 10; j++ {
		c := s.b[j]
		if c >= '0' && c <= '9' {
			n = n*10 + int(c-'0')
			d++
			continue
		}
		if d > 0 && d < 10 && c != '.' && c != 'e' && c != 'E' {
			s.i = j
			return n, true
		}
		break
	}
	v, ok := s.num()
	return int(v), ok
}

func (s *scanner) bool() (bool, bool) {
	switch {
	case s.lit("true"):
		return true, true
	case s.lit("false"), s.lit("null"):
		return false, true
	}
	return false, false
}

// timing reads the timing object; unknown members are skipped. found is
// false when the value is not an object (null).
func (s *scanner) timing(t *Timing) (found, ok bool) {
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
			dst = &t.EnqueueMS
		case "queue_ms":
			dst = &t.QueueMS
		case "fetch_ms":
			dst = &t.FetchMS
		case "total_ms":
			dst = &t.TotalMS
		case "delay_ms":
			dst = &t.DelayMS
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
		_, _, ok := s.rawStr()
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
				if _, _, ok := s.rawStr(); !ok {
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

func (s *scanner) lit(word string) bool {
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}
