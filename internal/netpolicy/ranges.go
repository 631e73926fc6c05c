package netpolicy

import (
	"fmt"
	"net/netip"
)

// rangeClass says how strongly an address range is denied.
type rangeClass uint8

const (
	// classPublic addresses are allowed unless a Deny entry or port rule says otherwise.
	classPublic rangeClass = iota
	// classSpecial addresses (loopback, private, link-local, reserved, ...) are denied unless
	// Config.AllowPrivate is set or an Allow entry matches.
	classSpecial
	// classNever addresses (unspecified, multicast, broadcast) are never fetch destinations.
	classNever
)

// specialRange is one entry of the built-in range tables.
type specialRange struct {
	prefix netip.Prefix
	class  rangeClass
	reason string
}

func mustRange(cidr string, class rangeClass, reason string) specialRange {
	return specialRange{prefix: netip.MustParsePrefix(cidr), class: class, reason: reason}
}

// ipv4Ranges are checked in order; the first match wins, so narrower entries come first.
var ipv4Ranges = []specialRange{
	mustRange("0.0.0.0/8", classNever, `"this network" address (0.0.0.0/8)`),
	mustRange("255.255.255.255/32", classNever, "broadcast address"),
	mustRange("224.0.0.0/4", classNever, "multicast address"),
	mustRange("127.0.0.0/8", classSpecial, "loopback address"),
	mustRange("10.0.0.0/8", classSpecial, "private address (RFC 1918)"),
	mustRange("172.16.0.0/12", classSpecial, "private address (RFC 1918)"),
	mustRange("192.168.0.0/16", classSpecial, "private address (RFC 1918)"),
	mustRange("100.64.0.0/10", classSpecial, "shared address space (RFC 6598, carrier-grade NAT)"),
	mustRange("169.254.169.254/32", classSpecial, "cloud metadata address (link-local)"),
	mustRange("169.254.0.0/16", classSpecial, "link-local address"),
	mustRange("192.0.0.0/24", classSpecial, "IETF protocol assignment (192.0.0.0/24)"),
	mustRange("192.0.2.0/24", classSpecial, "documentation address (TEST-NET-1)"),
	mustRange("198.51.100.0/24", classSpecial, "documentation address (TEST-NET-2)"),
	mustRange("203.0.113.0/24", classSpecial, "documentation address (TEST-NET-3)"),
	mustRange("192.88.99.0/24", classSpecial, "deprecated 6to4 relay anycast address"),
	mustRange("198.18.0.0/15", classSpecial, "benchmarking address (RFC 2544)"),
	mustRange("240.0.0.0/4", classSpecial, "reserved address (240.0.0.0/4)"),
}

// ipv6Ranges are checked in order before the embedded-IPv4 forms and the global-unicast rule.
var ipv6Ranges = []specialRange{
	mustRange("::/128", classNever, "unspecified address"),
	mustRange("ff00::/8", classNever, "multicast address"),
	mustRange("::1/128", classSpecial, "loopback address"),
	mustRange("fe80::/10", classSpecial, "link-local address"),
	mustRange("fec0::/10", classSpecial, "deprecated site-local address"),
	mustRange("fd00:ec2::254/128", classSpecial, "cloud metadata address (unique local)"),
	mustRange("fc00::/7", classSpecial, "unique local address (private IPv6)"),
	mustRange("100::/64", classSpecial, "discard-only address (RFC 6666)"),
	mustRange("64:ff9b:1::/48", classSpecial, "local-use NAT64 address (RFC 8215)"),
	mustRange("2001:db8::/32", classSpecial, "documentation address (2001:db8::/32)"),
	mustRange("3fff::/20", classSpecial, "documentation address (3fff::/20)"),
	mustRange("2001::/23", classSpecial, "IETF protocol assignment incl. Teredo (2001::/23)"),
	mustRange("5f00::/16", classSpecial, "SRv6 SID address (RFC 9602)"),
}

var (
	prefixNAT64      = netip.MustParsePrefix("64:ff9b::/96")
	prefix6to4       = netip.MustParsePrefix("2002::/16")
	prefixTranslated = netip.MustParsePrefix("::ffff:0:0:0/96")
	prefixCompatible = netip.MustParsePrefix("::/96")
	prefixGlobal     = netip.MustParsePrefix("2000::/3")
)

// embeddedIPv4 returns the IPv4 address embedded in an IPv6 address of one of the forms that
// carry one — IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64 (64:ff9b::/96) and 6to4
// (2002::/16) — and a short name of the form. ip must have no zone.
func embeddedIPv4(ip netip.Addr) (v4 netip.Addr, form string, ok bool) {
	if !ip.Is6() {
		return netip.Addr{}, "", false
	}
	b := ip.As16()
	last := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	switch {
	case ip.Is4In6():
		return last, "IPv4-mapped address", true
	case prefixNAT64.Contains(ip):
		return last, "NAT64 address", true
	case prefixTranslated.Contains(ip):
		return last, "IPv4-translated address", true
	case prefix6to4.Contains(ip):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), "6to4 address", true
	case prefixCompatible.Contains(ip) && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback():
		return last, "IPv4-compatible address", true
	}
	return netip.Addr{}, "", false
}

// classify returns the built-in class of ip (without zone) and, unless it is public, why.
// IPv4-mapped addresses are judged as the IPv4 address they carry; other IPv6 forms that
// embed an IPv4 address are denied when the embedded address is, keeping its class.
func classify(ip netip.Addr) (rangeClass, string) {
	ip = ip.Unmap()
	if ip.Is4() {
		for _, r := range ipv4Ranges {
			if r.prefix.Contains(ip) {
				return r.class, r.reason
			}
		}
		return classPublic, ""
	}
	for _, r := range ipv6Ranges {
		if r.prefix.Contains(ip) {
			return r.class, r.reason
		}
	}
	if v4, form, ok := embeddedIPv4(ip); ok {
		if c, reason := classify(v4); c != classPublic {
			return c, fmt.Sprintf("%s embedding %s: %s", form, v4, reason)
		}
		switch {
		case prefixNAT64.Contains(ip), prefix6to4.Contains(ip):
			return classPublic, ""
		default:
			return classSpecial, "deprecated " + form
		}
	}
	if !prefixGlobal.Contains(ip) {
		return classSpecial, "reserved IPv6 address (outside 2000::/3)"
	}
	return classPublic, ""
}
