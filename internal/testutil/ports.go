package testutil

import (
	"net"
	"testing"
)

// FreePort returns a 127.0.0.1 TCP port that was free a moment ago: for
// things that must be told a port before they listen (another process, a
// restart on the same port), or a port where nothing listens.
func FreePort(t testing.TB) int {
	t.Helper()
	return FreePorts(t, 1)[0]
}

// FreePorts returns n distinct 127.0.0.1 TCP ports that were free a moment
// ago. All n are held open together while they are picked, so they differ.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("pick a free port: %v", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
