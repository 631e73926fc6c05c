package netpolicy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Resolver resolves host names for DialContext. *net.Resolver satisfies it. LookupIPAddr
// must honour ctx and return every address the name has; DialContext calls it at most once
// per dial and checks all the addresses it returns.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Option configures a Policy beyond its Config; it validates its argument and New returns
// its error wrapped.
type Option func(*Policy) error

// WithResolver makes DialContext resolve names with r instead of net.DefaultResolver. Tests
// use it to map names to chosen addresses without DNS. r must not be nil.
func WithResolver(r Resolver) Option {
	return func(p *Policy) error {
		if r == nil {
			return fmt.Errorf("%w: nil Resolver", ErrInvalidConfig)
		}
		p.resolver = r
		return nil
	}
}

// WithDialer makes DialContext open connections with a copy of d (its timeouts, keep-alive,
// local address, Control hooks) instead of the default dialer (30 s timeout, 30 s
// keep-alive). d only ever receives already-checked IP addresses; its Resolver is unused.
// d must not be nil.
func WithDialer(d *net.Dialer) Option {
	return func(p *Policy) error {
		if d == nil {
			return fmt.Errorf("%w: nil Dialer", ErrInvalidConfig)
		}
		p.dialer = *d
		return nil
	}
}

// Policy is a compiled destination policy. It is immutable after New and safe for concurrent
// use by multiple goroutines.
type Policy struct {
	allow, deny  []entry
	allowPorts   map[uint16]struct{} // nil: every port
	denyPorts    map[uint16]struct{}
	maxRedirects int
	allowPrivate bool
	resolver     Resolver
	dialer       net.Dialer
	// dial, if set, replaces the dialer for already-checked "ip:port" addresses (tests).
	dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// New validates cfg, applies opts and returns the Policy. It fails, with an error wrapping
// ErrInvalidConfig that names the field and value, if an Allow or Deny entry does not follow
// the syntax described on Config, a port is outside 1..65535, or an option is invalid.
func New(cfg Config, opts ...Option) (*Policy, error) {
	p := &Policy{
		maxRedirects: cfg.MaxRedirects,
		allowPrivate: cfg.AllowPrivate,
		resolver:     net.DefaultResolver,
		dialer:       net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
	}
	if p.maxRedirects == 0 {
		p.maxRedirects = DefaultMaxRedirects
	}
	var err error
	if p.allow, err = parseEntries("Allow", cfg.Allow); err != nil {
		return nil, err
	}
	if p.deny, err = parseEntries("Deny", cfg.Deny); err != nil {
		return nil, err
	}
	if p.allowPorts, err = portSet("AllowPorts", cfg.AllowPorts); err != nil {
		return nil, err
	}
	if p.denyPorts, err = portSet("DenyPorts", cfg.DenyPorts); err != nil {
		return nil, err
	}
	for _, opt := range opts {
		if err := opt(p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func parseEntries(field string, list []string) ([]entry, error) {
	entries := make([]entry, 0, len(list))
	for i, s := range list {
		e, err := parseEntry(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s[%d] %q: %v", ErrInvalidConfig, field, i, s, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// ParseURL parses raw with url.Parse and checks the result with CheckURL. A parse failure
// is returned wrapping ErrInvalidURL.
func (p *Policy) ParseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	if err := p.CheckURL(u); err != nil {
		return nil, err
	}
	return u, nil
}

// CheckURL reports whether u may be fetched, as far as can be told without resolving its
// host: it returns nil, an error wrapping ErrInvalidURL, or a *DestinationError.
//
// u must be absolute with scheme http or https and a host. A literal IP host, in any form
// (IPv6 with or without embedded IPv4, decimal, octal, hexadecimal or shortened IPv4), is
// judged as the address it means; a host name is checked against name entries and the
// localhost names, and its addresses are checked later by DialContext. Ports are checked
// (80 and 443 by default). Userinfo is refused ("http://user:pass@host/"), after the
// destination, so "http://user@127.0.0.1/" reports the loopback address.
func (p *Policy) CheckURL(u *url.URL) error {
	if u == nil {
		return invalidf("nil URL")
	}
	var defaultPort uint16
	switch strings.ToLower(u.Scheme) {
	case "http":
		defaultPort = 80
	case "https":
		defaultPort = 443
	case "":
		return invalidf("missing scheme (want http or https)")
	default:
		return invalidf("unsupported scheme %q (want http or https)", u.Scheme)
	}
	if u.Opaque != "" {
		return invalidf("opaque URL (want scheme://host/...)")
	}
	if u.Host == "" {
		return invalidf("missing host")
	}
	rawHost, rawPort, err := splitURLHost(u.Host)
	if err != nil {
		return err
	}
	if rawHost != u.Hostname() || rawPort != u.Port() {
		return invalidf("ambiguous host %q", u.Host)
	}
	port := defaultPort
	if rawPort != "" {
		if port, err = parsePort(rawPort); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalidURL, err)
		}
	}
	h, err := parseHost(rawHost)
	if err != nil {
		return err
	}
	if _, err := p.checkHost(h, port); err != nil {
		return err
	}
	if u.User != nil {
		return invalidf("userinfo in URL is not allowed")
	}
	return nil
}

// CheckRedirect is an http.Client CheckRedirect function. It lets a request follow at most
// Config.MaxRedirects redirects: the next one (len(via) counts the original request and
// every hop so far, so it is this redirect's number) fails with ErrTooManyRedirects,
// wrapped. With a negative MaxRedirects it returns http.ErrUseLastResponse, so the client
// returns the 3xx response itself. Otherwise it runs CheckURL on the new URL, so a refused
// hop fails before any connection is attempted; the addresses a redirect's host name
// resolves to are checked by DialContext.
func (p *Policy) CheckRedirect(req *http.Request, via []*http.Request) error {
	if p.maxRedirects < 0 {
		return http.ErrUseLastResponse
	}
	if len(via) > p.maxRedirects {
		return fmt.Errorf("%w: stopped after %d redirects", ErrTooManyRedirects, p.maxRedirects)
	}
	return p.CheckURL(req.URL)
}

// Transport returns a clone of base whose connections go through p.DialContext, with
// proxies disabled (Proxy nil, so HTTP_PROXY and friends are ignored) and the Dial, DialTLS
// and DialTLSContext hooks cleared so nothing bypasses the policy; TLS runs over the checked
// connection. If base is nil, a transport with net/http's default timeouts and pool sizes is
// used. base itself is not modified.
func (p *Policy) Transport(base *http.Transport) *http.Transport {
	var t *http.Transport
	if base != nil {
		t = base.Clone()
	} else {
		t = &http.Transport{
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: 1 * time.Second,
		}
	}
	t.Proxy = nil
	t.OnProxyConnectResponse = nil
	t.GetProxyConnectHeader = nil
	// The deprecated hooks are cleared too: either would take precedence over DialContext.
	t.Dial = nil
	t.DialTLS = nil
	t.DialTLSContext = nil
	t.DialContext = p.DialContext
	return t
}

// checkHost checks a classified host on port before resolution. For an IP literal it is the
// full check. For a name it applies Deny name entries, the localhost rule and port rules,
// and returns the Allow name entry matching it, if any, for the per-address checks.
func (p *Policy) checkHost(h destHost, port uint16) (*entry, error) {
	if h.addr.IsValid() {
		if reason, ok := p.checkAddr(h.addr, port, nil); !ok {
			if h.form != "" {
				reason = fmt.Sprintf("%s for %s: %s", h.form, h.addr.WithZone(""), reason)
			}
			return nil, &DestinationError{Host: h.raw, Reason: reason}
		}
		if h.ambiguous {
			return nil, invalidf("ambiguous IPv4 literal %q (inet_aton reads %s); write it in dotted-decimal form", h.raw, h.addr)
		}
		return nil, nil
	}
	for i := range p.deny {
		if p.deny[i].matchName(h.name, port) {
			return nil, &DestinationError{Host: h.raw, Reason: fmt.Sprintf("denied by Deny entry %q", p.deny[i].raw)}
		}
	}
	var allow *entry
	for i := range p.allow {
		if p.allow[i].matchName(h.name, port) {
			allow = &p.allow[i]
			break
		}
	}
	if allow == nil && !p.allowPrivate && isLocalhostName(h.name) {
		return nil, &DestinationError{Host: h.raw, Reason: "localhost name (resolves to loopback)"}
	}
	if !p.portPermitted(port) && (allow == nil || allow.port != port) && !p.allowAddrNamesPort(port) {
		return nil, &DestinationError{Host: h.raw, Reason: fmt.Sprintf("port %d not permitted", port)}
	}
	return allow, nil
}

// checkAddr checks one address (literal or resolved) on port. nameAllow is the Allow name
// entry that matched the host name the address came from, if any. It returns a reason and
// false when the address is refused.
func (p *Policy) checkAddr(ip netip.Addr, port uint16, nameAllow *entry) (string, bool) {
	zone := ip.Zone()
	ip = ip.WithZone("").Unmap()
	embedded, _, hasEmbedded := embeddedIPv4(ip)
	for i := range p.deny {
		e := &p.deny[i]
		if e.matchAddr(ip, port) || (hasEmbedded && e.matchAddr(embedded, port)) {
			return fmt.Sprintf("denied by Deny entry %q", e.raw), false
		}
	}
	class, reason := classify(ip)
	if class == classNever {
		return reason, false
	}
	if zone != "" {
		if reason == "" {
			reason = "IPv6 address"
		}
		return fmt.Sprintf("%s with zone %q (scoped addresses are not allowed)", reason, zone), false
	}
	allow := nameAllow
	for i := range p.allow {
		if p.allow[i].matchAddr(ip, port) {
			allow = &p.allow[i]
			break
		}
	}
	if class == classSpecial && allow == nil && !p.allowPrivate {
		return reason, false
	}
	if !p.portPermitted(port) && (allow == nil || allow.port != port) {
		return fmt.Sprintf("port %d not permitted", port), false
	}
	return "", true
}

// portPermitted applies AllowPorts and DenyPorts.
func (p *Policy) portPermitted(port uint16) bool {
	if _, ok := p.denyPorts[port]; ok {
		return false
	}
	if p.allowPorts != nil {
		_, ok := p.allowPorts[port]
		return ok
	}
	return true
}

// allowAddrNamesPort reports whether an Allow address entry names port, in which case the
// port decision for a host name waits for its resolved addresses.
func (p *Policy) allowAddrNamesPort(port uint16) bool {
	for i := range p.allow {
		if p.allow[i].prefix.IsValid() && p.allow[i].port == port {
			return true
		}
	}
	return false
}
