package origin

import (
	"context"
	"fmt"
	"net"
)

// listenTCP listens on addr with plain TCP. Go (1.24 and later) listens
// with Multipath TCP by default where the kernel has it, and an MPTCP
// listening socket refuses socket filters (setsockopt SO_ATTACH_FILTER:
// EOPNOTSUPP), so the origin could not drop a blocked source's packets in
// the kernel (sourcefilter_linux.go). WebSocket clients do not dial with
// MPTCP anyway, and accepting costs the same either way
// (BenchmarkBlockedAccept: 100.1 against 100.8 CPU-µs per blocked
// connection).
func listenTCP(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}
