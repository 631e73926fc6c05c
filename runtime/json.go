package runtime

import (
	"encoding/binary"
	"slices"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/pipeline-dev/pipeline/broker"
)

// The request bodies of transform and compute are small JSON objects whose
// one large field is a string. A hand-written scanner reads them in a single
// pass without reflection: it validates the whole document as JSON (RFC 8259),
// extracts "data" and "rounds", and skips every other member. Decoding
// follows encoding/json where the two could differ: invalid UTF-8 bytes and
// lone surrogate escapes become U+FFFD, the last of duplicate keys wins, and
// null counts as absent. Keys match exactly ("data", not "Data").

// maxDepth bounds nesting inside skipped values.
const maxDepth = 256

// fields holds what the functions read from a JSON request body.
type fields struct {
	data      []byte // decoded "data"; may alias the request body
	hasData   bool
	rounds    []byte // the raw number token of "rounds"
	hasRounds bool
	badData   bool // the last "data" was neither a string nor null
	badRounds bool // the last "rounds" was neither a number nor null
}

// jsonScanner walks a JSON document held in b.
type jsonScanner struct {
	b []byte
	i int
}

// parseFields parses body as one JSON object and extracts its "data" and
// "rounds" members. wantRounds says whether "rounds" is of interest. A
// member of the wrong type is not an error here (a later duplicate may
// replace it): the badData/badRounds flags record it.
func parseFields(body []byte, wantRounds bool) (fields, *broker.Error) {
	var f fields
	s := jsonScanner{b: body}
	s.ws()
	if s.i >= len(s.b) {
		return f, badInput("invalid JSON: empty body")
	}
	if s.b[s.i] != '{' {
		return f, badInput("invalid JSON: the body must be a JSON object")
	}
	s.i++
	s.ws()
	if s.peek() == '}' {
		s.i++
		return f, s.end()
	}
	for {
		s.ws()
		if s.peek() != '"' {
			return f, s.syntax("expected a string key")
		}
		key, esc, err := s.rawString()
		if err != nil {
			return f, err
		}
		if esc {
			key = decodeString(key, true)
		}
		s.ws()
		if s.peek() != ':' {
			return f, s.syntax("expected ':' after key")
		}
		s.i++
		s.ws()
		switch {
		case string(key) == "data":
			switch s.peek() {
			case '"':
				raw, esc, err := s.rawString()
				if err != nil {
					return f, err
				}
				f.data, f.hasData, f.badData = decodeString(raw, esc), true, false
			case 'n':
				if err := s.literal("null"); err != nil {
					return f, err
				}
				f.data, f.hasData, f.badData = nil, false, false
			default:
				if err := s.skipValue(0); err != nil {
					return f, err
				}
				f.data, f.hasData, f.badData = nil, false, true
			}
		case wantRounds && string(key) == "rounds":
			switch c := s.peek(); {
			case c == '-' || c >= '0' && c <= '9':
				num, err := s.number()
				if err != nil {
					return f, err
				}
				f.rounds, f.hasRounds, f.badRounds = num, true, false
			case c == 'n':
				if err := s.literal("null"); err != nil {
					return f, err
				}
				f.rounds, f.hasRounds, f.badRounds = nil, false, false
			default:
				if err := s.skipValue(0); err != nil {
					return f, err
				}
				f.rounds, f.hasRounds, f.badRounds = nil, false, true
			}
		default:
			if err := s.skipValue(0); err != nil {
				return f, err
			}
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return f, s.end()
		default:
			return f, s.syntax("expected ',' or '}' after object member")
		}
	}
}

// parseRounds reads a rounds number token: an integer in [1, max].
func parseRounds(tok []byte, max int) (int, *broker.Error) {
	for _, c := range tok {
		if c == '.' || c == 'e' || c == 'E' {
			return 0, badInput(`"rounds" must be an integer`)
		}
	}
	n, err := strconv.ParseInt(string(tok), 10, 64)
	if err != nil || n < 1 || n > int64(max) {
		return 0, badInput(`"rounds" must be between 1 and %d, got %s`, max, tok)
	}
	return int(n), nil
}

func (s *jsonScanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end checks that only whitespace follows the top-level value.
func (s *jsonScanner) end() *broker.Error {
	s.ws()
	if s.i != len(s.b) {
		return s.syntax("unexpected data after the JSON object")
	}
	return nil
}

func (s *jsonScanner) syntax(what string) *broker.Error {
	if s.i >= len(s.b) {
		return badInput("invalid JSON: unexpected end of input (%s)", what)
	}
	return badInput("invalid JSON at byte %d: %s", s.i, what)
}

// rawString reads a string starting at the opening quote and returns its
// undecoded contents and whether they contain escape sequences or bytes that
// are not valid UTF-8 (both need decodeString).
func (s *jsonScanner) rawString() (raw []byte, needsDecode bool, err *broker.Error) {
	s.i++ // opening quote
	start := s.i
	for s.i < len(s.b) {
		s.i += plainRun(s.b[s.i:])
		if s.i >= len(s.b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			if !needsDecode && !utf8.Valid(raw) {
				needsDecode = true
			}
			return raw, needsDecode, nil
		case c == '\\':
			needsDecode = true
			s.i++
			switch s.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				if s.i+4 > len(s.b) {
					return nil, false, s.syntax(`truncated \u escape`)
				}
				for _, h := range s.b[s.i : s.i+4] {
					if !isHex(h) {
						return nil, false, s.syntax(`bad \u escape`)
					}
				}
				s.i += 4
			default:
				return nil, false, s.syntax("bad escape sequence in string")
			}
		case c < 0x20:
			return nil, false, s.syntax("control character in string")
		default:
			s.i++
		}
	}
	return nil, false, s.syntax("unterminated string")
}

// number reads a JSON number token.
func (s *jsonScanner) number() ([]byte, *broker.Error) {
	start := s.i
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return nil, s.syntax("bad number")
	}
	if s.peek() == '.' {
		s.i++
		if !isDigit(s.peek()) {
			return nil, s.syntax("bad number")
		}
		s.digits()
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !isDigit(s.peek()) {
			return nil, s.syntax("bad number")
		}
		s.digits()
	}
	return s.b[start:s.i], nil
}

func (s *jsonScanner) digits() {
	for s.i < len(s.b) && isDigit(s.b[s.i]) {
		s.i++
	}
}

func (s *jsonScanner) literal(word string) *broker.Error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.syntax("invalid literal")
	}
	s.i += len(word)
	return nil
}

// skipValue validates and skips one JSON value of any kind.
func (s *jsonScanner) skipValue(depth int) *broker.Error {
	if depth > maxDepth {
		return badInput("invalid JSON: nesting deeper than %d", maxDepth)
	}
	switch c := s.peek(); {
	case c == '"':
		_, _, err := s.rawString()
		return err
	case c == '-' || isDigit(c):
		_, err := s.number()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '[':
		s.i++
		s.ws()
		if s.peek() == ']' {
			s.i++
			return nil
		}
		for {
			s.ws()
			if err := s.skipValue(depth + 1); err != nil {
				return err
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return nil
			default:
				return s.syntax("expected ',' or ']' in array")
			}
		}
	case c == '{':
		s.i++
		s.ws()
		if s.peek() == '}' {
			s.i++
			return nil
		}
		for {
			s.ws()
			if s.peek() != '"' {
				return s.syntax("expected a string key")
			}
			if _, _, err := s.rawString(); err != nil {
				return err
			}
			s.ws()
			if s.peek() != ':' {
				return s.syntax("expected ':' after key")
			}
			s.i++
			s.ws()
			if err := s.skipValue(depth + 1); err != nil {
				return err
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.i++
			case '}':
				s.i++
				return nil
			default:
				return s.syntax("expected ',' or '}' in object")
			}
		}
	default:
		return s.syntax("expected a value")
	}
}

// decodeString decodes the contents of a JSON string that rawString has
// validated. Without escapes or invalid UTF-8 it returns raw itself.
func decodeString(raw []byte, needsDecode bool) []byte {
	if !needsDecode {
		return raw
	}
	out := make([]byte, 0, len(raw)+8)
	for i := 0; i < len(raw); {
		c := raw[i]
		if c == '\\' {
			i++
			switch raw[i] {
			case '"', '\\', '/':
				out = append(out, raw[i])
				i++
			case 'b':
				out = append(out, '\b')
				i++
			case 'f':
				out = append(out, '\f')
				i++
			case 'n':
				out = append(out, '\n')
				i++
			case 'r':
				out = append(out, '\r')
				i++
			case 't':
				out = append(out, '\t')
				i++
			case 'u':
				r := hex4(raw[i+1 : i+5])
				i += 5
				if utf16.IsSurrogate(r) {
					if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						if dec := utf16.DecodeRune(r, hex4(raw[i+2:i+6])); dec != unicode.ReplacementChar {
							out = utf8.AppendRune(out, dec)
							i += 6
							continue
						}
					}
					r = unicode.ReplacementChar
				}
				out = utf8.AppendRune(out, r)
			}
			continue
		}
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		r, size := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && size == 1 {
			out = utf8.AppendRune(out, unicode.ReplacementChar)
		} else {
			out = append(out, raw[i:i+size]...)
		}
		i += size
	}
	return out
}

// appendJSONString appends s (valid UTF-8) as a quoted JSON string,
// upper-casing every character first when upper is set. Only what JSON
// requires is escaped, plus U+2028 and U+2029 as encoding/json does; HTML
// characters are left alone.
func appendJSONString(b, s []byte, upper bool) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	b = slices.Grow(b, len(s)+1)
	for i := 0; i < len(s); {
		// Fast path: 8 printable ASCII bytes that need no escaping.
		if i+8 <= len(s) {
			x := binary.LittleEndian.Uint64(s[i:])
			if x&hiBits == 0 && !needsEscape(x) {
				if upper {
					x = upperASCII(x)
				}
				b = binary.LittleEndian.AppendUint64(b, x)
				i += 8
				continue
			}
		}
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case c >= 0x20 && c != '"' && c != '\\':
				if upper && c >= 'a' && c <= 'z' {
					c -= 'a' - 'A'
				}
				b = append(b, c)
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c == '\b':
				b = append(b, '\\', 'b')
			case c == '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		i += size
		if upper {
			r = unicode.ToUpper(r)
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			continue
		}
		b = utf8.AppendRune(b, r)
	}
	return append(b, '"')
}

// SWAR ("SIMD within a register") helpers: a uint64 holds 8 bytes.
const (
	loBits = 0x0101010101010101
	hiBits = 0x8080808080808080
)

// hasZeroByte reports whether any byte of x is zero.
func hasZeroByte(x uint64) bool { return (x-loBits)&^x&hiBits != 0 }

// needsEscape reports whether any byte of x is '"', '\\' or a control
// character (< 0x20). Bytes >= 0x80 never count.
func needsEscape(x uint64) bool {
	return (x-0x20*loBits)&^x&hiBits != 0 ||
		hasZeroByte(x^('"'*loBits)) ||
		hasZeroByte(x^('\\'*loBits))
}

// upperASCII upper-cases the ASCII letters of x, whose bytes are all < 0x80.
func upperASCII(x uint64) uint64 {
	a := x + (0x80-'a')*loBits   // high bit set where byte >= 'a'
	z := x + (0x80-'z'-1)*loBits // high bit set where byte > 'z'
	return x ^ ((a &^ z & hiBits) >> 2)
}

// plainRun returns the length of the prefix of b that holds no '"', '\\'
// or control character, checking 8 bytes at a time. It may stop early, at
// most 7 bytes before such a byte.
func plainRun(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		if needsEscape(binary.LittleEndian.Uint64(b[i:])) {
			break
		}
	}
	return i
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// hex4 decodes four validated hex digits.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		default:
			r |= rune(c - 'A' + 10)
		}
	}
	return r
}
