// Package netpolicy decides which outbound destinations the executor's HTTP fetcher may
// reach. It is the SSRF guard that lets executors fetch URLs sent by WebSocket clients while
// running next to private infrastructure.
//
// A Policy is checked at three points, each of which must pass:
//
//   - CheckURL (and ParseURL) before a request is made: scheme http or https, a well-formed
//     host, no userinfo, literal IP addresses in every textual form, host-name and port rules.
//   - CheckRedirect on every redirect hop, with a cap on the number of hops.
//   - DialContext when the connection is opened: a host name is resolved exactly once, every
//     address it resolves to is checked, and only a checked IP address is dialled, so there is
//     no window for DNS rebinding between check and use.
//
// Transport returns an *http.Transport wired to DialContext with proxies disabled; use it
// together with CheckRedirect in the fetcher's http.Client.
//
// # Default denials
//
// With a zero Config the policy refuses every scheme but http and https and every address in a
// special-purpose range: loopback (127.0.0.0/8, ::1), private (10.0.0.0/8, 172.16.0.0/12,
// 192.168.0.0/16, fc00::/7), shared CGNAT space (100.64.0.0/10), link-local (169.254.0.0/16,
// including cloud metadata at 169.254.169.254, fe80::/10), "this network" (0.0.0.0/8, ::),
// multicast (224.0.0.0/4, ff00::/8), broadcast and reserved (240.0.0.0/4), documentation and
// benchmarking ranges, and every IPv6 address outside global unicast 2000::/3. IPv6 forms that
// embed an IPv4 address — IPv4-mapped ::ffff:a.b.c.d (treated exactly as the IPv4 address),
// IPv4-compatible ::a.b.c.d, IPv4-translated ::ffff:0:a.b.c.d, NAT64 64:ff9b::/96 and 6to4
// 2002::/16 — are also judged by the IPv4 address they embed. The names "localhost" and
// "*.localhost" are refused before any resolution.
//
// Unspecified, multicast and broadcast addresses (0.0.0.0/8, ::, 224.0.0.0/4, ff00::/8,
// 255.255.255.255) are never valid fetch destinations: neither Config.AllowPrivate nor an
// Allow entry lifts their denial.
//
// # Numeric hosts
//
// Go's URL parser accepts hosts such as "2130706433", "0177.0.0.1", "0x7f.1" or "127.1", which
// C resolvers (inet_aton) and browsers read as IPv4 addresses. A host whose last label is a
// number is therefore always parsed with ParseIPv4Loose and never handed to a resolver: if the
// address it means is denied the destination is refused naming that address; if it is not in
// canonical dotted-decimal form it is refused as ErrInvalidURL anyway, because other software
// may read it differently ("010.0.0.1" is 8.0.0.1 to inet_aton, 10.0.0.1 to others); if it
// cannot be parsed it is ErrInvalidURL.
//
// # Errors
//
// Every refused destination is reported as a *DestinationError (possibly wrapped, e.g. in a
// *url.Error by http.Client); a URL that cannot be interpreted safely wraps ErrInvalidURL; a
// redirect chain over the limit wraps ErrTooManyRedirects. Callers map these to the wire codes
// blocked_destination, invalid_url and fetch_failed with errors.As and errors.Is.
package netpolicy
