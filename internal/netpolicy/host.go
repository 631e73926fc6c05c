package netpolicy

import (
	"net/netip"
	"strings"
)

// destHost is a destination host as classified before any resolution.
type destHost struct {
	raw  string     // as given, without brackets or port
	name string     // normalized host name (lower case, no trailing dot); "" for literals
	addr netip.Addr // the literal address (IPv4-mapped unmapped, zone kept); invalid for names
	// form describes a literal written in a form other than the canonical one of addr, e.g.
	// "IPv4-mapped IPv6 literal"; "" when canonical.
	form string
	// ambiguous marks a numeric IPv4 literal that is not canonical dotted-decimal, which
	// other software may read as a different address.
	ambiguous bool
}

// parseHost classifies a host (no port, no brackets) as an IP literal — in every textual form
// that some resolver would read as one — or a host name. It returns an error wrapping
// ErrInvalidURL for hosts that are neither: empty, non-ASCII, bad characters or labels, or
// numeric hosts that ParseIPv4Loose rejects.
func parseHost(raw string) (destHost, error) {
	h := destHost{raw: raw}
	if raw == "" {
		return h, invalidf("empty host")
	}
	if strings.Contains(raw, ":") {
		a, err := netip.ParseAddr(raw)
		if err != nil || !a.Is6() {
			return h, invalidf("malformed IPv6 host %q", raw)
		}
		if a.Is4In6() && a.Zone() == "" {
			h.form = "IPv4-mapped IPv6 literal"
			a = a.Unmap()
		}
		h.addr = a
		return h, nil
	}
	name := strings.TrimSuffix(strings.ToLower(raw), ".")
	if !validName(name) {
		return h, invalidf("malformed host %q", raw)
	}
	if endsInNumber(name) {
		a, err := ParseIPv4Loose(name)
		if err != nil {
			return h, invalidf("numeric host %q is not a valid IPv4 address", raw)
		}
		h.addr = a
		if a.String() != name {
			h.form, h.ambiguous = "non-canonical IPv4 literal", true
		}
		return h, nil
	}
	h.name = name
	return h, nil
}

// validName reports whether name (lower case, no trailing dot) is a syntactically acceptable
// DNS name: at most 253 bytes, dot-separated labels of 1 to 63 bytes drawn from a-z, 0-9, '-'
// and '_'. Internationalized names must be given in their ASCII (xn--) form.
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0
}

// isLocalhostName reports whether the normalized name is "localhost" or under ".localhost",
// which resolvers answer with loopback addresses without asking DNS (RFC 6761).
func isLocalhostName(name string) bool {
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

// splitURLHost splits a URL's Host field strictly into host and port: "name", "name:port",
// "[v6]" or "[v6]:port" (port may be empty after the colon, meaning the scheme's default).
func splitURLHost(hostport string) (host, port string, err error) {
	if strings.HasPrefix(hostport, "[") {
		end := strings.IndexByte(hostport, ']')
		if end < 0 {
			return "", "", invalidf("missing ']' in host %q", hostport)
		}
		host = hostport[1:end]
		rest := hostport[end+1:]
		if rest != "" && rest[0] != ':' {
			return "", "", invalidf("unexpected %q after ']' in host %q", rest, hostport)
		}
		if !strings.Contains(host, ":") {
			return "", "", invalidf("bracketed host %q is not an IPv6 address", hostport)
		}
		return host, strings.TrimPrefix(rest, ":"), nil
	}
	switch strings.Count(hostport, ":") {
	case 0:
		return hostport, "", nil
	case 1:
		host, port, _ = strings.Cut(hostport, ":")
		return host, port, nil
	}
	return "", "", invalidf("malformed host %q (IPv6 addresses need brackets)", hostport)
}
