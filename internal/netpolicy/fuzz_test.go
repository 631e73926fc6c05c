package netpolicy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// oracleDenied is an independent statement of the default denials, written with the
// standard library's predicates and a few extra prefixes rather than the package's tables.
func oracleDenied(ip netip.Addr) bool {
	if ip.Zone() != "" {
		return true
	}
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return true
	}
	extra := []string{
		"0.0.0.0/8", "100.64.0.0/10", "240.0.0.0/4", "192.0.0.0/24", "198.18.0.0/15",
		"::/96", "::ffff:0:0:0/96", "64:ff9b:1::/48", "fc00::/7", "fec0::/10",
	}
	for _, s := range extra {
		if netip.MustParsePrefix(s).Contains(ip) {
			return true
		}
	}
	if ip.Is6() {
		b := ip.As16()
		if netip.MustParsePrefix("64:ff9b::/96").Contains(ip) {
			return oracleDenied(netip.AddrFrom4([4]byte(b[12:16])))
		}
		if netip.MustParsePrefix("2002::/16").Contains(ip) {
			return oracleDenied(netip.AddrFrom4([4]byte(b[2:6])))
		}
		return !netip.MustParsePrefix("2000::/3").Contains(ip)
	}
	return false
}

var fuzzURLSeeds = []string{
	"http://example.com/",
	"https://example.com:8443/a?b#c",
	"http://8.8.8.8/",
	"http://127.0.0.1/",
	"http://2130706433/",
	"http://0177.0.0.1/",
	"http://0x7f.0.0.1/",
	"http://0x7f000001/",
	"http://127.1/",
	"http://127.0.0.1./",
	"http://[::ffff:127.0.0.1]/",
	"http://[::ffff:7f00:1]/",
	"http://[64:ff9b::7f00:1]/",
	"http://[2002:7f00:1::]/",
	"http://[fe80::1%25eth0]/",
	"http://[::]/",
	"http://0/",
	"http://user@127.0.0.1/",
	"http://user:pass@10.0.0.1/",
	"http://169.254.169.254/latest/meta-data",
	"ftp://example.com/",
	"file:///etc/passwd",
	"gopher://127.0.0.1:25/",
	"http://localhost./",
	"http://x.localhost/",
	"http://010.0.0.1/",
	"http://1.2.3.4.5/",
	"http://8.8.8.8#@127.0.0.1/",
	"http://[2606:4700:4700::1111]:443/",
}

func FuzzCheckURL(f *testing.F) {
	for _, s := range fuzzURLSeeds {
		f.Add(s)
	}
	d := &lastDialer{}
	p, err := New(Config{}, WithResolver(anyNamePublic{}))
	if err != nil {
		f.Fatal(err)
	}
	p.dial = d.dial
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		err = p.CheckURL(u)
		if err != nil {
			var de *DestinationError
			if !errors.As(err, &de) && !errors.Is(err, ErrInvalidURL) {
				t.Fatalf("CheckURL(%q) = %T %v, want *DestinationError or ErrInvalidURL", raw, err, err)
			}
			return
		}
		if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
			t.Fatalf("CheckURL(%q) allowed scheme %q", raw, u.Scheme)
		}
		if u.Opaque != "" || u.User != nil {
			t.Fatalf("CheckURL(%q) allowed opaque %q / userinfo %v", raw, u.Opaque, u.User)
		}
		host := u.Hostname()
		if host == "" {
			t.Fatalf("CheckURL(%q) allowed an empty host", raw)
		}
		if port := u.Port(); port != "" {
			if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
				t.Fatalf("CheckURL(%q) allowed port %q", raw, port)
			}
		}
		if ip, err := netip.ParseAddr(host); err == nil && oracleDenied(ip) {
			t.Fatalf("CheckURL(%q) allowed denied address %v", raw, ip)
		}
		trimmed := strings.TrimSuffix(strings.ToLower(host), ".")
		if ip, err := ParseIPv4Loose(trimmed); err == nil {
			if oracleDenied(ip) {
				t.Fatalf("CheckURL(%q) allowed %q, which means denied address %v", raw, host, ip)
			}
			if ip.String() != trimmed {
				t.Fatalf("CheckURL(%q) allowed non-canonical IPv4 literal %q", raw, host)
			}
		}
		if trimmed == "localhost" || strings.HasSuffix(trimmed, ".localhost") {
			t.Fatalf("CheckURL(%q) allowed localhost name %q", raw, host)
		}
		for i := 0; i < len(host); i++ {
			if host[i] >= 0x80 {
				t.Fatalf("CheckURL(%q) allowed non-ASCII host %q", raw, host)
			}
		}
		// What http.Transport hands to DialContext for this URL must be accepted too (names
		// resolve to a public address here) and dialled as a literal IP.
		port := u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[strings.ToLower(u.Scheme)]
		}
		conn, err := p.DialContext(context.Background(), "tcp", net.JoinHostPort(host, port))
		if err != nil {
			t.Fatalf("CheckURL(%q) allowed, DialContext refused: %v", raw, err)
		}
		conn.Close()
		if _, err := netip.ParseAddrPort(d.last()); err != nil {
			t.Fatalf("CheckURL(%q): DialContext dialled %q, not a literal ip:port", raw, d.last())
		}
	})
}

// lastDialer remembers only the last address dialled (fuzzing runs millions of dials) and
// returns an in-memory pipe.
type lastDialer struct {
	mu   sync.Mutex
	addr string
}

func (d *lastDialer) dial(_ context.Context, _, address string) (net.Conn, error) {
	d.mu.Lock()
	d.addr = address
	d.mu.Unlock()
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func (d *lastDialer) last() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addr
}

// anyNamePublic resolves every name to one public address.
type anyNamePublic struct{}

func (anyNamePublic) LookupIPAddr(context.Context, string) ([]net.IPAddr, error) {
	return []net.IPAddr{{IP: net.IPv4(8, 8, 8, 8)}}, nil
}

// refIPv4Loose is a second, independently written inet_aton-style parser used as the
// reference for FuzzParseIPv4Loose.
func refIPv4Loose(s string) (uint32, bool) {
	s = strings.TrimSuffix(s, ".")
	parts := strings.Split(s, ".")
	if s == "" || len(parts) > 4 {
		return 0, false
	}
	vals := make([]uint64, len(parts))
	for i, part := range parts {
		digits, base := part, 10
		switch {
		case strings.HasPrefix(part, "0x") || strings.HasPrefix(part, "0X"):
			digits, base = part[2:], 16
			if digits == "" {
				digits = "0"
			}
		case len(part) > 1 && part[0] == '0':
			digits, base = part[1:], 8
		}
		if digits == "" || strings.ContainsAny(digits, "+-_") {
			return 0, false
		}
		v, err := strconv.ParseUint(digits, base, 32)
		if err != nil {
			return 0, false
		}
		vals[i] = v
	}
	var out uint64
	for i, v := range vals {
		if i == len(vals)-1 {
			if v >= 1<<(8*(4-i)) {
				return 0, false
			}
			out |= v
		} else {
			if v > 255 {
				return 0, false
			}
			out |= v << (24 - 8*i)
		}
	}
	return uint32(out), true
}

func FuzzParseIPv4Loose(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1", "2130706433", "0x7f000001", "017700000001", "0177.0.0.1", "0x7f.0.0.1",
		"127.1", "127.0.1", "0x7f.1", "0", "0x", "1.2.3.4.", "4294967295", "4294967296",
		"1.2.3.4.5", "08", "0x1g", "256.1.1.1", "1.16777216", "", ".", "1..2", "+1", "0X7F.1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseIPv4Loose(s)
		ref, ok := refIPv4Loose(s)
		if (err == nil) != ok {
			t.Fatalf("ParseIPv4Loose(%q) error = %v, reference ok = %v", s, err, ok)
		}
		if err != nil {
			return
		}
		if !got.Is4() {
			t.Fatalf("ParseIPv4Loose(%q) = %v, not IPv4", s, got)
		}
		b := got.As4()
		if v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]); v != ref {
			t.Fatalf("ParseIPv4Loose(%q) = %v, reference %d", s, got, ref)
		}
		if again, err := ParseIPv4Loose(got.String()); err != nil || again != got {
			t.Fatalf("ParseIPv4Loose(%q) = %v does not round-trip: %v, %v", s, got, again, err)
		}
		if std, err := netip.ParseAddr(s); err == nil && std != got {
			t.Fatalf("ParseIPv4Loose(%q) = %v, netip.ParseAddr = %v", s, got, std)
		}
	})
}
