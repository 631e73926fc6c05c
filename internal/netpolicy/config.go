package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultMaxRedirects is the redirect cap used when Config.MaxRedirects is zero.
const DefaultMaxRedirects = 5

// Config says which destinations a Policy allows. The zero value is the safe default: only
// http and https, every special-purpose address range denied (see the package
// documentation), any port, at most DefaultMaxRedirects redirects.
//
// Allow and Deny entries share one syntax; matching is case-insensitive and a trailing dot on
// a name is ignored. Each entry is one of
//
//	example.com            a host name, matched exactly as written in the URL
//	*.example.com          any subdomain of example.com (not example.com itself)
//	192.0.2.10             an IPv4 address (canonical dotted-decimal only)
//	2001:db8::10           an IPv6 address (brackets optional: [2001:db8::10])
//	10.0.0.0/8             an IPv4 or IPv6 CIDR prefix (no host bits set)
//
// optionally followed by ":port" to restrict the entry to one port (1..65535):
// "example.com:8443", "127.0.0.1:8090", "[::1]:8090", "10.0.0.0/8:8080",
// "[fd00::/8]:8080" or "fd00::/8:8080". An IPv6 address with a port needs brackets, because
// "2001:db8::10:80" is itself an address. An entry without a port matches every port.
//
// Host-name entries match the name in the URL or dial address; address and prefix entries
// match literal addresses and every address a name resolves to. IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) are matched as the IPv4 address; Deny entries also match the IPv4 address
// embedded in NAT64, 6to4, IPv4-compatible and IPv4-translated IPv6 addresses, Allow
// entries do not.
//
// Precedence, for each destination (name and every resolved address): a matching Deny entry
// refuses; then unspecified, multicast and broadcast addresses are refused; then a matching
// Allow entry lifts the built-in range and localhost denial; then AllowPorts and DenyPorts
// apply, except to a destination whose matching Allow entry names that very port.
type Config struct {
	// Allow lists destinations permitted even though they fall in a denied special-purpose
	// range, e.g. "127.0.0.1:8090" for the bundled test target. An address entry lifts the
	// denial for exactly that address (and port, if given): "127.0.0.1:8090" does not
	// permit 127.0.0.1:8091 nor ::1. A host-name entry lifts the built-in denial for every
	// address the name resolves to, on its port if one is given; those addresses are still
	// checked against Deny. Allow never lifts Deny entries nor the denial of unspecified,
	// multicast and broadcast addresses. If empty, no exceptions are made.
	Allow []string `yaml:"allow"`

	// Deny lists destinations refused even when public, in the Allow syntax. Deny wins over
	// Allow and AllowPrivate. A host-name entry only matches that name; to block a service
	// reliably also deny its addresses. If empty, only the built-in denials apply.
	Deny []string `yaml:"deny"`

	// AllowPorts, if non-empty, permits only these ports (1..65535); the port of a URL is its
	// explicit port or 80 for http and 443 for https. If empty, every port is permitted.
	AllowPorts []int `yaml:"allow_ports"`

	// DenyPorts refuses these ports (1..65535) on every destination. If empty, none is.
	DenyPorts []int `yaml:"deny_ports"`

	// MaxRedirects caps the number of redirects CheckRedirect lets a request follow; the
	// next one fails with ErrTooManyRedirects. If zero, DefaultMaxRedirects (5) is used. If
	// negative, redirects are not followed: CheckRedirect returns http.ErrUseLastResponse,
	// so the client returns the 3xx response itself.
	MaxRedirects int `yaml:"max_redirects"`

	// AllowPrivate turns off the built-in denial of special-purpose ranges (loopback,
	// private, link-local, reserved, ...) and of the localhost names, for trusted
	// deployments whose fetch targets live on private networks. Deny entries, port rules
	// and the denial of unspecified, multicast and broadcast addresses still apply.
	AllowPrivate bool `yaml:"allow_private"`
}

// entry is one parsed Allow or Deny entry.
type entry struct {
	raw    string       // as configured, for error reasons
	name   string       // exact host name; "" if not a name entry
	suffix string       // ".example.com" for "*.example.com"; "" if not a wildcard entry
	prefix netip.Prefix // valid for address and prefix entries
	port   uint16       // 0 matches every port
}

// matchName reports whether e is a name entry matching the normalized host name on port.
func (e *entry) matchName(name string, port uint16) bool {
	if e.port != 0 && e.port != port {
		return false
	}
	switch {
	case e.name != "":
		return name == e.name
	case e.suffix != "":
		return len(name) > len(e.suffix) && strings.HasSuffix(name, e.suffix)
	}
	return false
}

// matchAddr reports whether e is an address or prefix entry containing ip (unmapped, no zone)
// on port.
func (e *entry) matchAddr(ip netip.Addr, port uint16) bool {
	if e.port != 0 && e.port != port {
		return false
	}
	return e.prefix.IsValid() && e.prefix.Contains(ip)
}

// parseEntry parses one Allow or Deny entry (see Config for the syntax).
func parseEntry(s string) (entry, error) {
	e := entry{raw: s}
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return e, errors.New("empty entry")
	}
	hostPart, portPart, hasPort := s, "", false
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return e, errors.New("missing ']'")
		}
		hostPart = s[1:end]
		if rest := s[end+1:]; rest != "" {
			if rest[0] != ':' {
				return e, fmt.Errorf("unexpected %q after ']'", rest)
			}
			portPart, hasPort = rest[1:], true
		}
		if !strings.Contains(hostPart, ":") {
			return e, errors.New("brackets are only for IPv6 addresses and prefixes")
		}
	case strings.Contains(s, "/"):
		addr, bits, _ := strings.Cut(s, "/")
		if b, p, ok := strings.Cut(bits, ":"); ok {
			bits, portPart, hasPort = b, p, true
		}
		hostPart = addr + "/" + bits
	case strings.Count(s, ":") == 1:
		hostPart, portPart, _ = strings.Cut(s, ":")
		hasPort = true
	}
	if hasPort {
		port, err := parsePort(portPart)
		if err != nil {
			return e, err
		}
		e.port = port
	}

	if strings.Contains(hostPart, "/") {
		p, err := netip.ParsePrefix(hostPart)
		if err != nil {
			return e, fmt.Errorf("bad prefix: %w", err)
		}
		if p != p.Masked() {
			return e, fmt.Errorf("prefix has host bits set (did you mean %s?)", p.Masked())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		e.prefix = p
		return e, nil
	}
	if strings.Contains(hostPart, ":") {
		a, err := netip.ParseAddr(hostPart)
		if err != nil {
			return e, fmt.Errorf("bad IPv6 address: %w", err)
		}
		if a.Zone() != "" {
			return e, errors.New("IPv6 zones are not supported")
		}
		a = a.Unmap()
		e.prefix = netip.PrefixFrom(a, a.BitLen())
		return e, nil
	}
	name := strings.TrimSuffix(hostPart, ".")
	if wild, ok := strings.CutPrefix(name, "*."); ok {
		if !validName(wild) || endsInNumber(wild) {
			return e, fmt.Errorf("bad wildcard domain %q", wild)
		}
		e.suffix = "." + wild
		return e, nil
	}
	if !validName(name) {
		return e, fmt.Errorf("bad host name %q", name)
	}
	if endsInNumber(name) {
		a, err := netip.ParseAddr(name)
		if err != nil || !a.Is4() {
			return e, fmt.Errorf("numeric host %q is not a canonical dotted-decimal IPv4 address", name)
		}
		e.prefix = netip.PrefixFrom(a, 32)
		return e, nil
	}
	e.name = name
	return e, nil
}

// parsePort parses a decimal port in 1..65535.
func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q: want a number in 1..65535", s)
	}
	return uint16(n), nil
}

// portSet converts a configured port list, checking every value.
func portSet(field string, ports []int) (map[uint16]struct{}, error) {
	if len(ports) == 0 {
		return nil, nil
	}
	set := make(map[uint16]struct{}, len(ports))
	for i, p := range ports {
		if p < 1 || p > 65535 {
			return nil, fmt.Errorf("%w: %s[%d] = %d: want a port in 1..65535", ErrInvalidConfig, field, i, p)
		}
		set[uint16(p)] = struct{}{}
	}
	return set, nil
}
