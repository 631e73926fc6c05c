package netpolicy

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParseIPv4Loose parses s as an IPv4 address in any of the textual forms accepted by C's
// inet_aton and by the WHATWG URL standard's IPv4 parser, which Go's net.ParseIP and
// netip.ParseAddr reject:
//
//   - one to four parts separated by dots;
//   - each part decimal, octal when it has a leading 0 ("0177"), or hexadecimal with a 0x or
//     0X prefix ("0x7f"; "0x" alone is 0);
//   - with n parts, each of the first n-1 is one byte and the last fills the remaining 5-n
//     bytes: "127.1" is 127.0.0.1, "2130706433" and "0x7f000001" are 127.0.0.1;
//   - a single trailing dot is ignored ("127.0.0.1." is 127.0.0.1).
//
// Anything else returns an error: an empty string or part, signs, spaces, a digit outside
// the part's base ("08"), a part too large for the bytes it fills, more than four parts.
// ParseIPv4Loose never consults a resolver. For canonical dotted-decimal input it returns the
// same address as netip.ParseAddr; use addr.String() == s to tell whether s was canonical.
func ParseIPv4Loose(s string) (netip.Addr, error) {
	in := s
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return netip.Addr{}, fmt.Errorf("netpolicy: invalid IPv4 literal %q: empty", in)
	}
	var parts [4]uint64
	n := 0
	for {
		if n == len(parts) {
			return netip.Addr{}, fmt.Errorf("netpolicy: invalid IPv4 literal %q: more than four parts", in)
		}
		part, rest, more := strings.Cut(s, ".")
		v, ok := parseIPv4Part(part)
		if !ok {
			return netip.Addr{}, fmt.Errorf("netpolicy: invalid IPv4 literal %q: bad part %q", in, part)
		}
		parts[n] = v
		n++
		if !more {
			break
		}
		s = rest
	}
	for i := range n - 1 {
		if parts[i] > 0xff {
			return netip.Addr{}, fmt.Errorf("netpolicy: invalid IPv4 literal %q: part %d out of range", in, i+1)
		}
	}
	if maxLast := uint64(1)<<(8*(5-n)) - 1; parts[n-1] > maxLast {
		return netip.Addr{}, fmt.Errorf("netpolicy: invalid IPv4 literal %q: last part out of range", in)
	}
	v := uint32(parts[n-1])
	for i := range n - 1 {
		v |= uint32(parts[i]) << (24 - 8*i)
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), nil
}

// parseIPv4Part parses one part of a loose IPv4 literal: decimal, octal with a leading 0, or
// hexadecimal with a 0x/0X prefix. It reports false for an empty part, a bad digit, or a
// value above 2^32-1.
func parseIPv4Part(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := uint64(10)
	switch {
	case len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
	case len(s) >= 2 && s[0] == '0':
		base, s = 8, s[1:]
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		d := digitValue(s[i])
		if d >= base {
			return 0, false
		}
		v = v*base + d
		if v > 0xffffffff {
			return 0, false
		}
	}
	return v, true
}

// digitValue returns the value of a hexadecimal digit, or 99 for any other byte.
func digitValue(c byte) uint64 {
	switch {
	case '0' <= c && c <= '9':
		return uint64(c - '0')
	case 'a' <= c && c <= 'f':
		return uint64(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return uint64(c-'A') + 10
	}
	return 99
}

// endsInNumber reports whether the last dot-separated label of the lower-case host name
// (trailing dot already removed) is numeric — all decimal digits, or 0x followed by hex
// digits — which makes the whole host an IPv4 literal under the WHATWG URL rules and to
// inet_aton. Such hosts must never be handed to a resolver.
func endsInNumber(name string) bool {
	last := name
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		last = name[i+1:]
	}
	if last == "" {
		return false
	}
	digits, base := last, uint64(10)
	if strings.HasPrefix(last, "0x") {
		digits, base = last[2:], 16
	}
	for i := 0; i < len(digits); i++ {
		if digitValue(digits[i]) >= base {
			return false
		}
	}
	return true
}
