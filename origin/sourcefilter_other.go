//go:build !linux

package origin

import (
	"net"
	"net/netip"
)

// sourceFilter is Linux only: elsewhere blocked sources are closed at
// accept.
type sourceFilter struct{}

// maxFilteredSources is Linux's bound; nothing is filtered here.
const maxFilteredSources = 0

func newSourceFilter(net.Listener) *sourceFilter { return nil }

func (*sourceFilter) set([]netip.Addr) error { return nil }
