//go:build !linux

package origin

import (
	"net"
	"net/netip"
)

// rawAcceptor is Linux only; elsewhere Accept goes through the listener.
type rawAcceptor struct{}

func newRawAcceptor(net.Listener) *rawAcceptor { return nil }

func (*rawAcceptor) accept(func(netip.Addr) bool, func(netip.Addr)) (net.Conn, error) {
	panic("rawAcceptor.accept without a raw acceptor")
}

func (*rawAcceptor) close() error { return nil }
