//go:build linux

package origin

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// TestAcceptErrorsAreTemporaryAsNetOnes checks that running out of file
// descriptors reads as a temporary accept error, which http.Server waits
// out, and a closed listener as net.ErrClosed, which ends it.
func TestAcceptErrorsAreTemporaryAsNetOnes(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE} {
		// http.Server asserts the type, as here; it does not unwrap.
		err := acceptError(errno)
		if ne, ok := err.(net.Error); !ok || !ne.Temporary() { //nolint:staticcheck // http.Server reads Temporary
			t.Errorf("%v: %v is not a temporary error; http.Server would stop serving", errno, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ra := newRawAcceptor(ln)
	if ra == nil {
		t.Fatal("no raw acceptor for a TCP listener")
	}
	_ = ra.close()
	_ = ln.Close()
	if _, err := ra.accept(nil, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v, want net.ErrClosed", err)
	}
}
