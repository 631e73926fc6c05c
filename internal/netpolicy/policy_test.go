package netpolicy

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// outcome is the expected result of a check.
type outcome int

const (
	allowed outcome = iota
	blocked         // *DestinationError
	invalid         // wraps ErrInvalidURL
)

func (o outcome) String() string {
	return [...]string{"allowed", "blocked", "invalid"}[o]
}

// outcomeOf classifies err, failing the test for errors of any other kind.
func outcomeOf(t *testing.T, err error) outcome {
	t.Helper()
	var de *DestinationError
	switch {
	case err == nil:
		return allowed
	case errors.As(err, &de):
		if de.Reason == "" {
			t.Errorf("DestinationError with empty Reason: %v", err)
		}
		return blocked
	case errors.Is(err, ErrInvalidURL):
		return invalid
	}
	t.Fatalf("unexpected error kind %T: %v", err, err)
	return 0
}

func mustNew(t testing.TB, cfg Config, opts ...Option) *Policy {
	t.Helper()
	p, err := New(cfg, opts...)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return p
}

// checkRaw parses raw and runs CheckURL; a parse error counts as invalid.
func checkRaw(p *Policy, raw string) error {
	_, err := p.ParseURL(raw)
	return err
}

func TestCheckURLDefaultPolicy(t *testing.T) {
	p := mustNew(t, Config{})
	tests := []struct {
		url    string
		want   outcome
		reason string // substring of the DestinationError reason, if set
	}{
		// Loopback in every spelling.
		{"http://127.0.0.1/", blocked, "loopback"},
		{"http://127.0.0.1:8090/", blocked, "loopback"},
		{"https://127.0.0.1:443/", blocked, "loopback"},
		{"HTTP://127.0.0.1/", blocked, "loopback"},
		{"http://127.255.255.254/", blocked, "loopback"},
		{"http://127.0.0.1./", blocked, "loopback"},
		{"http://2130706433/", blocked, "non-canonical IPv4 literal for 127.0.0.1"},
		{"http://0177.0.0.1/", blocked, "for 127.0.0.1: loopback"},
		{"http://0x7f.0.0.1/", blocked, "for 127.0.0.1: loopback"},
		{"http://0X7F.0.0.1/", blocked, "for 127.0.0.1: loopback"},
		{"http://0x7f000001/", blocked, "for 127.0.0.1: loopback"},
		{"http://017700000001/", blocked, "for 127.0.0.1: loopback"},
		{"http://127.1/", blocked, "for 127.0.0.1: loopback"},
		{"http://127.0.1/", blocked, "for 127.0.0.1: loopback"},
		{"http://0x7f.1/", blocked, "for 127.0.0.1: loopback"},
		{"http://127.000.000.001/", blocked, "for 127.0.0.1: loopback"},
		{"http://[::1]/", blocked, "loopback"},
		{"http://[0:0:0:0:0:0:0:1]/", blocked, "loopback"},
		{"http://[::ffff:127.0.0.1]/", blocked, "IPv4-mapped IPv6 literal for 127.0.0.1: loopback"},
		{"http://[::ffff:7f00:1]/", blocked, "IPv4-mapped IPv6 literal for 127.0.0.1: loopback"},
		{"http://[::127.0.0.1]/", blocked, "IPv4-compatible address embedding 127.0.0.1"},
		{"http://[::ffff:0:7f00:1]/", blocked, "IPv4-translated address embedding 127.0.0.1"},
		{"http://[64:ff9b::7f00:1]/", blocked, "NAT64 address embedding 127.0.0.1"},
		{"http://[64:ff9b::10.0.0.1]/", blocked, "NAT64 address embedding 10.0.0.1"},
		{"http://[2002:7f00:1::]/", blocked, "6to4 address embedding 127.0.0.1"},
		{"http://[2002:a9fe:a9fe::1]/", blocked, "6to4 address embedding 169.254.169.254"},
		{"http://localhost/", blocked, "localhost"},
		{"http://LOCALHOST./", blocked, "localhost"},
		{"http://localhost.:8080/", blocked, "localhost"},
		{"http://foo.localhost/", blocked, "localhost"},
		{"http://a.b.LocalHost/", blocked, "localhost"},
		// Userinfo: the destination is reported first, then userinfo itself is refused.
		{"http://user@127.0.0.1/", blocked, "loopback"},
		{"http://user:pass@10.0.0.1/", blocked, "private"},
		{"http://user:pass@example.com/", invalid, ""},
		{"http://user@example.com/", invalid, ""},
		{"http://127.0.0.1:80@example.com/", invalid, ""},
		// Private, shared, link-local and metadata.
		{"http://10.0.0.1/", blocked, "private address (RFC 1918)"},
		{"http://172.16.0.1/", blocked, "RFC 1918"},
		{"http://172.31.255.255/", blocked, "RFC 1918"},
		{"http://192.168.1.1/", blocked, "RFC 1918"},
		{"http://100.64.0.1/", blocked, "carrier-grade NAT"},
		{"http://100.100.100.200/", blocked, "carrier-grade NAT"},
		{"http://169.254.169.254/latest/meta-data", blocked, "cloud metadata"},
		{"http://0xa9fea9fe/", blocked, "169.254.169.254: cloud metadata"},
		{"http://[::ffff:a9fe:a9fe]/", blocked, "cloud metadata"},
		{"http://169.254.1.1/", blocked, "link-local"},
		{"http://[fd00:ec2::254]/", blocked, "cloud metadata"},
		{"http://[fe80::1]/", blocked, "link-local"},
		{"http://[fe80::1%25eth0]/", blocked, "link-local"},
		{"http://[fc00::1]/", blocked, "unique local"},
		{"http://[fd12:3456::1]/", blocked, "unique local"},
		// Unspecified, multicast, broadcast, reserved, documentation.
		{"http://0/", blocked, "this network"},
		{"http://0.0.0.0/", blocked, "this network"},
		{"http://0.0.0.0:8080/", blocked, "this network"},
		{"http://[::]/", blocked, "unspecified"},
		{"http://224.0.0.1/", blocked, "multicast"},
		{"http://239.255.255.250:1900/", blocked, "multicast"},
		{"http://[ff02::1]/", blocked, "multicast"},
		{"http://255.255.255.255/", blocked, "broadcast"},
		{"http://240.0.0.1/", blocked, "reserved"},
		{"http://192.0.2.1/", blocked, "documentation"},
		{"http://198.18.0.1/", blocked, "benchmarking"},
		{"http://[2001:db8::1]/", blocked, "documentation"},
		{"http://[2001::1]/", blocked, "Teredo"},
		{"http://[100::1]/", blocked, "discard"},
		{"http://[1::1]/", blocked, "outside 2000::/3"},
		// Schemes other than http and https.
		{"ftp://example.com/file", invalid, ""},
		{"file:///etc/passwd", invalid, ""},
		{"gopher://127.0.0.1:25/_HELO", invalid, ""},
		{"ws://127.0.0.1/", invalid, ""},
		{"javascript:alert(1)", invalid, ""},
		{"data:text/plain,hi", invalid, ""},
		{"dict://127.0.0.1:11211/stat", invalid, ""},
		{"//example.com/", invalid, ""},
		// Malformed hosts and ports.
		{"http:127.0.0.1", invalid, ""},
		{"http:/127.0.0.1", invalid, ""},
		{"http://", invalid, ""},
		{"http://:80/", invalid, ""},
		{"http://1.2.3.4.5/", invalid, ""},
		{"http://256.0.0.1/", invalid, ""},
		{"http://08.0.0.1/", invalid, ""},
		{"http://0x100.0.0.1/", invalid, ""},
		{"http://4294967296/", invalid, ""},
		{"http://example.123/", invalid, ""},
		{"http://010.0.0.1/", invalid, ""}, // inet_aton: 8.0.0.1, others: 10.0.0.1
		{"http://134744072/", invalid, ""}, // 8.8.8.8, but not dotted-decimal
		{"http://１２７.0.0.1/", invalid, ""},
		{"http://%31%32%37.0.0.1/", invalid, ""},
		{"http://a..b/", invalid, ""},
		{"http://localhost../", invalid, ""},
		{"http://example.com:0/", invalid, ""},
		{"http://example.com:65536/", invalid, ""},
		{"http://127.0.0.1:80:80/", invalid, ""},
		{"http://[127.0.0.1]/", invalid, ""},
		{"http://127.0.0.1\\@8.8.8.8/", invalid, ""},
		{"http://exa mple.com/", invalid, ""},
		// Allowed.
		{"http://example.com/", allowed, ""},
		{"https://EXAMPLE.com./path?q=1#f", allowed, ""},
		{"https://example.com:8443/", allowed, ""},
		{"http://example.com:/", allowed, ""},
		{"http://8.8.8.8/", allowed, ""},
		{"http://[::ffff:8.8.8.8]/", allowed, ""},
		{"http://[2606:4700:4700::1111]/", allowed, ""},
		{"http://[64:ff9b::8.8.8.8]/", allowed, ""},
		{"http://[2002:808:808::1]/", allowed, ""},
		{"http://8.8.8.8#@127.0.0.1/", allowed, ""}, // Go (and the fetcher) connect to 8.8.8.8
		{"http://xn--bcher-kva.example/", allowed, ""},
		{"http://localhost.example.com/", allowed, ""},
		{"http://0x7f.example.com/", allowed, ""}, // a name: last label is not numeric
	}
	counts := map[outcome]int{}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := checkRaw(p, tt.url)
			if got := outcomeOf(t, err); got != tt.want {
				t.Fatalf("CheckURL(%q) = %v (%v), want %v", tt.url, got, err, tt.want)
			}
			var de *DestinationError
			if tt.reason != "" && errors.As(err, &de) && !strings.Contains(de.Reason, tt.reason) {
				t.Errorf("CheckURL(%q) reason = %q, want it to contain %q", tt.url, de.Reason, tt.reason)
			}
		})
		counts[tt.want]++
	}
	if hostile := counts[blocked] + counts[invalid]; hostile < 40 {
		t.Errorf("only %d hostile cases, want at least 40", hostile)
	}
}

func TestCheckURLNilAndHandBuilt(t *testing.T) {
	p := mustNew(t, Config{})
	tests := []struct {
		name string
		u    *url.URL
		want outcome
	}{
		{"nil", nil, invalid},
		{"opaque", &url.URL{Scheme: "http", Opaque: "127.0.0.1"}, invalid},
		{"host with two ports", &url.URL{Scheme: "http", Host: "127.0.0.1:80:90"}, invalid},
		{"bare IPv6 host", &url.URL{Scheme: "http", Host: "::1"}, invalid},
		{"unclosed bracket", &url.URL{Scheme: "http", Host: "[::1"}, invalid},
		{"junk after bracket", &url.URL{Scheme: "http", Host: "[::1]x"}, invalid},
		{"non-numeric port", &url.URL{Scheme: "http", Host: "example.com:http"}, invalid},
		{"loopback hand-built", &url.URL{Scheme: "http", Host: "127.0.0.1"}, blocked},
		{"public hand-built", &url.URL{Scheme: "https", Host: "example.com"}, allowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.CheckURL(tt.u)
			if got := outcomeOf(t, err); got != tt.want {
				t.Errorf("CheckURL(%v) = %v (%v), want %v", tt.u, got, err, tt.want)
			}
		})
	}
}

func TestCheckURLAllowDenyPorts(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		url  string
		want outcome
	}{
		{"exact ip:port allowed", Config{Allow: []string{"127.0.0.1:8090"}}, "http://127.0.0.1:8090/echo", allowed},
		{"exact ip:port, other port", Config{Allow: []string{"127.0.0.1:8090"}}, "http://127.0.0.1:8091/", blocked},
		{"exact ip:port, default port", Config{Allow: []string{"127.0.0.1:8090"}}, "http://127.0.0.1/", blocked},
		{"exact ip:port, other loopback ip", Config{Allow: []string{"127.0.0.1:8090"}}, "http://127.0.0.2:8090/", blocked},
		{"exact ip:port, ::1", Config{Allow: []string{"127.0.0.1:8090"}}, "http://[::1]:8090/", blocked},
		{"exact ip:port, mapped form is the same address", Config{Allow: []string{"127.0.0.1:8090"}}, "http://[::ffff:127.0.0.1]:8090/", allowed},
		{"exact ip:port, NAT64 form is not", Config{Allow: []string{"127.0.0.1:8090"}}, "http://[64:ff9b::7f00:1]:8090/", blocked},
		{"exact ip:port, localhost name is not", Config{Allow: []string{"127.0.0.1:8090"}}, "http://localhost:8090/", blocked},
		{"exact ip:port, non-canonical form", Config{Allow: []string{"127.0.0.1:8090"}}, "http://2130706433:8090/", invalid},
		{"ip without port allows every port", Config{Allow: []string{"127.0.0.1"}}, "http://127.0.0.1:9999/", allowed},
		{"cidr", Config{Allow: []string{"10.0.0.0/8"}}, "http://10.1.2.3/", allowed},
		{"cidr outside", Config{Allow: []string{"10.0.0.0/8"}}, "http://11.0.0.1/", allowed},
		{"cidr with port", Config{Allow: []string{"10.0.0.0/8:8080"}}, "http://10.1.2.3:8080/", allowed},
		{"cidr with port, other port", Config{Allow: []string{"10.0.0.0/8:8080"}}, "http://10.1.2.3/", blocked},
		{"ipv6 entry", Config{Allow: []string{"[::1]:8090"}}, "http://[::1]:8090/", allowed},
		{"ipv6 cidr entry", Config{Allow: []string{"fd00::/8:8080"}}, "http://[fd12::1]:8080/", allowed},
		{"allow cannot lift unspecified", Config{Allow: []string{"0.0.0.0"}}, "http://0.0.0.0/", blocked},
		{"allow cannot lift multicast", Config{Allow: []string{"224.0.0.0/4"}}, "http://224.0.0.1/", blocked},
		{"name allow lifts localhost", Config{Allow: []string{"localhost:8090"}}, "http://localhost:8090/", allowed},
		{"name allow other port", Config{Allow: []string{"localhost:8090"}}, "http://localhost:8091/", blocked},
		{"allow private", Config{AllowPrivate: true}, "http://10.0.0.1/", allowed},
		{"allow private localhost", Config{AllowPrivate: true}, "http://localhost/", allowed},
		{"allow private metadata", Config{AllowPrivate: true}, "http://169.254.169.254/", allowed},
		{"allow private not multicast", Config{AllowPrivate: true}, "http://[ff02::1]/", blocked},
		{"allow private not unspecified", Config{AllowPrivate: true}, "http://0/", blocked},
		{"allow private still denies", Config{AllowPrivate: true, Deny: []string{"169.254.0.0/16"}}, "http://169.254.169.254/", blocked},
		{"deny public ip", Config{Deny: []string{"8.8.8.8"}}, "http://8.8.8.8/", blocked},
		{"deny public ip mapped", Config{Deny: []string{"8.8.8.8"}}, "http://[::ffff:8.8.8.8]/", blocked},
		{"deny public ip via NAT64", Config{Deny: []string{"8.8.8.0/24"}}, "http://[64:ff9b::8.8.8.8]/", blocked},
		{"deny public ip via 6to4", Config{Deny: []string{"8.8.8.8"}}, "http://[2002:808:808::]/", blocked},
		{"deny name", Config{Deny: []string{"evil.example"}}, "http://EVIL.example./", blocked},
		{"deny wildcard", Config{Deny: []string{"*.internal"}}, "http://db.prod.internal/", blocked},
		{"deny wildcard not apex", Config{Deny: []string{"*.internal"}}, "http://internal/", allowed},
		{"deny name with port", Config{Deny: []string{"example.com:8080"}}, "http://example.com:8080/", blocked},
		{"deny name with port, other port", Config{Deny: []string{"example.com:8080"}}, "http://example.com/", allowed},
		{"deny wins over allow", Config{Allow: []string{"127.0.0.1"}, Deny: []string{"127.0.0.0/8"}}, "http://127.0.0.1/", blocked},
		{"allow ports", Config{AllowPorts: []int{80, 443}}, "http://example.com:8080/", blocked},
		{"allow ports default http", Config{AllowPorts: []int{80, 443}}, "http://example.com/", allowed},
		{"allow ports default https", Config{AllowPorts: []int{443}}, "https://example.com/", allowed},
		{"deny ports", Config{DenyPorts: []int{22}}, "http://example.com:22/", blocked},
		{"deny ports applies to allowed ip", Config{Allow: []string{"10.0.0.5"}, DenyPorts: []int{22}}, "http://10.0.0.5:22/", blocked},
		{"allow entry naming the port lifts port lists", Config{Allow: []string{"127.0.0.1:8090"}, AllowPorts: []int{80, 443}}, "http://127.0.0.1:8090/", allowed},
		{"name on a port only an address entry names: decided at dial", Config{Allow: []string{"127.0.0.1:8090"}, AllowPorts: []int{80, 443}}, "http://example.com:8090/", allowed}, // decided at dial time
		{"allow ports ip literal", Config{Allow: []string{"127.0.0.1:8090"}, AllowPorts: []int{80, 443}}, "http://8.8.8.8:8090/", blocked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, tt.cfg)
			err := checkRaw(p, tt.url)
			if got := outcomeOf(t, err); got != tt.want {
				t.Errorf("CheckURL(%q) with %+v = %v (%v), want %v", tt.url, tt.cfg, got, err, tt.want)
			}
		})
	}
}

func TestCheckRedirectUnit(t *testing.T) {
	req := func(raw string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, raw, nil)
		if err != nil {
			t.Fatalf("NewRequest(%q): %v", raw, err)
		}
		return r
	}
	via := func(n int) []*http.Request {
		v := make([]*http.Request, n)
		for i := range v {
			v[i] = req("http://example.com/")
		}
		return v
	}
	def := mustNew(t, Config{})
	two := mustNew(t, Config{MaxRedirects: 2})
	none := mustNew(t, Config{MaxRedirects: -1})

	tests := []struct {
		name string
		p    *Policy
		to   string
		via  int
		want error // nil, ErrTooManyRedirects, http.ErrUseLastResponse, or errBlocked
	}{
		{"default first redirect", def, "http://example.com/a", 1, nil},
		{"default fifth redirect", def, "http://example.com/a", 5, nil},
		{"default sixth redirect", def, "http://example.com/a", 6, ErrTooManyRedirects},
		{"cap two, third redirect", two, "http://example.com/a", 3, ErrTooManyRedirects},
		{"cap two, second redirect", two, "http://example.com/a", 2, nil},
		{"no redirects", none, "http://example.com/a", 1, http.ErrUseLastResponse},
		{"hop to private", def, "http://10.0.0.1/", 1, errBlocked},
		{"hop to metadata", def, "http://169.254.169.254/latest/meta-data", 1, errBlocked},
		{"hop to file", def, "file:///etc/passwd", 1, ErrInvalidURL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.CheckRedirect(req(tt.to), via(tt.via))
			var de *DestinationError
			switch {
			case tt.want == nil && err != nil:
				t.Errorf("CheckRedirect = %v, want nil", err)
			case tt.want == errBlocked && !errors.As(err, &de):
				t.Errorf("CheckRedirect = %v, want *DestinationError", err)
			case tt.want != nil && tt.want != errBlocked && !errors.Is(err, tt.want):
				t.Errorf("CheckRedirect = %v, want %v", err, tt.want)
			}
		})
	}
}

// errBlocked stands for "a *DestinationError" in tables.
var errBlocked = errors.New("blocked")

func TestNewInvalidConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		opts []Option
	}{
		{"empty allow entry", Config{Allow: []string{""}}, nil},
		{"bad prefix length", Config{Allow: []string{"10.0.0.0/33"}}, nil},
		{"host bits set", Config{Allow: []string{"10.0.0.1/8"}}, nil},
		{"port zero", Config{Allow: []string{"127.0.0.1:0"}}, nil},
		{"port too big", Config{Deny: []string{"example.com:65536"}}, nil},
		{"empty port", Config{Allow: []string{"127.0.0.1:"}}, nil},
		{"non-canonical ip", Config{Allow: []string{"2130706433"}}, nil},
		{"octal ip", Config{Allow: []string{"0177.0.0.1"}}, nil},
		{"bad name", Config{Deny: []string{"exa mple.com"}}, nil},
		{"bare star", Config{Allow: []string{"*"}}, nil},
		{"bracketed v4", Config{Allow: []string{"[127.0.0.1]:80"}}, nil},
		{"zone", Config{Allow: []string{"fe80::1%eth0"}}, nil},
		{"unclosed bracket", Config{Allow: []string{"[::1:80"}}, nil},
		{"allow port zero", Config{AllowPorts: []int{0}}, nil},
		{"deny port negative", Config{DenyPorts: []int{-1}}, nil},
		{"nil resolver", Config{}, []Option{WithResolver(nil)}},
		{"nil dialer", Config{}, []Option{WithDialer(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.cfg, tt.opts...)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New(%+v) = %v, %v; want error wrapping ErrInvalidConfig", tt.cfg, p, err)
			}
		})
	}
}

func TestParseEntry(t *testing.T) {
	tests := []struct {
		in     string
		name   string
		suffix string
		prefix string
		port   uint16
	}{
		{"example.com", "example.com", "", "", 0},
		{" Example.COM. ", "example.com", "", "", 0},
		{"target.local:8090", "target.local", "", "", 8090},
		{"*.example.com:443", "", ".example.com", "", 443},
		{"127.0.0.1:8090", "", "", "127.0.0.1/32", 8090},
		{"1.2.3.4", "", "", "1.2.3.4/32", 0},
		{"10.0.0.0/8", "", "", "10.0.0.0/8", 0},
		{"10.0.0.0/8:8080", "", "", "10.0.0.0/8", 8080},
		{"::1", "", "", "::1/128", 0},
		{"[::1]", "", "", "::1/128", 0},
		{"[::1]:8090", "", "", "::1/128", 8090},
		{"2001:db8::10:80", "", "", "2001:db8::10:80/128", 0},
		{"fd00::/8", "", "", "fd00::/8", 0},
		{"fd00::/8:8080", "", "", "fd00::/8", 8080},
		{"[fd00::/8]:8080", "", "", "fd00::/8", 8080},
		{"::ffff:10.0.0.0/104", "", "", "10.0.0.0/8", 0},
		{"[::ffff:127.0.0.1]:8090", "", "", "127.0.0.1/32", 8090},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			e, err := parseEntry(tt.in)
			if err != nil {
				t.Fatalf("parseEntry(%q): %v", tt.in, err)
			}
			gotPrefix := ""
			if e.prefix.IsValid() {
				gotPrefix = e.prefix.String()
			}
			if e.name != tt.name || e.suffix != tt.suffix || gotPrefix != tt.prefix || e.port != tt.port {
				t.Errorf("parseEntry(%q) = name %q suffix %q prefix %q port %d, want %q %q %q %d",
					tt.in, e.name, e.suffix, gotPrefix, e.port, tt.name, tt.suffix, tt.prefix, tt.port)
			}
		})
	}
}

func TestTransport(t *testing.T) {
	p := mustNew(t, Config{})
	base := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 7,
	}
	tr := p.Transport(base)
	if tr == base {
		t.Fatal("Transport returned base itself, want a clone")
	}
	if tr.Proxy != nil {
		t.Error("Transport: Proxy is set, want nil")
	}
	if tr.DialContext == nil || tr.DialTLSContext != nil {
		t.Errorf("Transport: DialContext set = %v, DialTLSContext set = %v; want true, false", tr.DialContext != nil, tr.DialTLSContext != nil)
	}
	if tr.MaxIdleConnsPerHost != 7 {
		t.Errorf("Transport: MaxIdleConnsPerHost = %d, want 7 (cloned from base)", tr.MaxIdleConnsPerHost)
	}
	if base.Proxy == nil || base.DialContext != nil {
		t.Error("Transport modified base")
	}
	if def := p.Transport(nil); def.DialContext == nil || def.Proxy != nil {
		t.Error("Transport(nil): want DialContext set and Proxy nil")
	}
}
