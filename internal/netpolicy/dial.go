package netpolicy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
)

// DialContext connects to address ("host:port") on network "tcp", "tcp4" or "tcp6" if the
// policy allows it; it has the signature of http.Transport.DialContext.
//
// The host is classified exactly as CheckURL does. A host name is resolved once with the
// policy's Resolver, and every returned address usable on network is checked; if any of them
// is refused the dial is refused as a whole (a mixed public/private answer is a rebinding or
// poisoning signal, so DialContext does not fall back to the public ones). Only the checked IP
// addresses are then dialled, in the resolver's order until one connects, so the name is
// never resolved again between check and connect.
//
// Errors: a *DestinationError for a refused destination; an error wrapping ErrInvalidURL for
// an unparsable address; resolver and connect errors as returned (a *net.DNSError when the
// name has no usable address); ctx.Err() when ctx ends first.
func (p *Policy) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("netpolicy: dial %s %s: unsupported network", network, address)
	}
	rawHost, rawPort, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("%w: dial address %q: %v", ErrInvalidURL, address, err)
	}
	port, err := parsePort(rawPort)
	if err != nil {
		return nil, fmt.Errorf("%w: dial address %q: %v", ErrInvalidURL, address, err)
	}
	h, err := parseHost(rawHost)
	if err != nil {
		return nil, err
	}
	nameAllow, err := p.checkHost(h, port)
	if err != nil {
		return nil, err
	}
	if h.addr.IsValid() {
		return p.dialChecked(ctx, network, []netip.Addr{h.addr}, port)
	}

	resolved, err := p.resolver.LookupIPAddr(ctx, rawHost)
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.Addr, 0, len(resolved))
	seen := make(map[netip.Addr]bool, len(resolved))
	for _, ia := range resolved {
		ip, ok := netip.AddrFromSlice(ia.IP)
		if !ok {
			return nil, &DestinationError{Host: rawHost, Reason: fmt.Sprintf("resolver returned malformed address %v", ia.IP)}
		}
		ip = ip.Unmap().WithZone(ia.Zone)
		if (network == "tcp4" && !ip.Is4()) || (network == "tcp6" && ip.Is4()) || seen[ip] {
			continue
		}
		seen[ip] = true
		if reason, ok := p.checkAddr(ip, port, nameAllow); !ok {
			return nil, &DestinationError{Host: rawHost, Reason: fmt.Sprintf("resolves to %s: %s", ip, reason)}
		}
		addrs = append(addrs, ip)
	}
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no suitable address", Name: rawHost, IsNotFound: true}
	}
	return p.dialChecked(ctx, network, addrs, port)
}

// dialChecked dials the already-checked addresses in order until one connects. The dialer's
// Control hook verifies that the socket connects to exactly the address handed to it.
func (p *Policy) dialChecked(ctx context.Context, network string, addrs []netip.Addr, port uint16) (net.Conn, error) {
	var firstErr error
	for _, ip := range addrs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		target := netip.AddrPortFrom(ip, port)
		conn, err := p.dialOne(ctx, network, target)
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// dialOne connects to one checked address.
func (p *Policy) dialOne(ctx context.Context, network string, target netip.AddrPort) (net.Conn, error) {
	if p.dial != nil {
		return p.dial(ctx, network, target.String())
	}
	d := p.dialer
	control, controlCtx := d.Control, d.ControlContext
	d.Control = nil
	d.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		got, err := netip.ParseAddrPort(address)
		if err != nil || got.Addr().Unmap().WithZone("") != target.Addr().WithZone("") || got.Port() != target.Port() {
			return &DestinationError{Host: address, Reason: fmt.Sprintf("socket address differs from checked address %s", target)}
		}
		if controlCtx != nil {
			return controlCtx(ctx, network, address, c)
		}
		if control != nil {
			return control(network, address, c)
		}
		return nil
	}
	return d.DialContext(ctx, network, target.String())
}
