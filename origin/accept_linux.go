//go:build linux

package origin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
)

// rawAcceptor accepts connections with accept4 on the listener's own file
// descriptor and closes a blocked source's there, before Go makes a
// connection of it: no netFD, no epoll registration, no TCP_NODELAY or
// keepalive setsockopts, and no epoll removal at close. Under a flood of
// blocked connections (5,000/s in TestWrongTokenFlood) that is most of
// the origin's cost per connection; BenchmarkBlockedAccept measures both
// ways. A connection of a source that is not blocked becomes a *net.TCPConn
// through net.FileConn, set up as net.TCPListener.Accept sets it up
// (TCP_NODELAY, keepalive with the default idle time).
type rawAcceptor struct {
	// f is a duplicate of the listener's descriptor (non-blocking, like
	// the listener's, and registered with Go's poller by os.NewFile); a
	// TCPListener's own RawConn cannot wait for reads.
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool
}

// newRawAcceptor returns the raw acceptor of ln, or nil when ln is not a
// *net.TCPListener or its descriptor cannot be duplicated (then Accept goes
// through ln). close must be called with ln's.
func newRawAcceptor(ln net.Listener) *rawAcceptor {
	lrc := tcpRawConn(ln)
	if lrc == nil {
		return nil
	}
	dup := -1
	if err := lrc.Control(func(fd uintptr) { dup, _ = dupCloexec(int(fd)) }); err != nil || dup < 0 {
		return nil
	}
	f := os.NewFile(uintptr(dup), "origin listener")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil
	}
	return &rawAcceptor{f: f, rc: rc}
}

// tcpRawConn is ln's descriptor, or nil when ln is not a *net.TCPListener.
func tcpRawConn(ln net.Listener) syscall.RawConn {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// dupCloexec duplicates fd with close-on-exec set.
func dupCloexec(fd int) (int, error) {
	nfd, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
	if errno != 0 {
		return -1, errno
	}
	return int(nfd), nil
}

// close closes the duplicate descriptor: a waiting accept returns.
func (ra *rawAcceptor) close() error {
	ra.closed.Store(true)
	return ra.f.Close()
}

// accept returns the next connection whose source blocked does not
// report, calling closed for each one it closed (with a reset: SO_LINGER
// 0) on the way. It waits for the listener to be readable through Go's
// poller, so a blocked Accept does not hold a thread. Its errors are the
// listener's (after Close: net.ErrClosed) or accept4's.
func (ra *rawAcceptor) accept(blocked func(netip.Addr) bool, closed func(netip.Addr)) (net.Conn, error) {
	for {
		var nfd int
		var aerr error
		err := ra.rc.Read(func(fd uintptr) bool {
			for {
				var sa syscall.Sockaddr
				nfd, sa, aerr = syscall.Accept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
				switch {
				case errors.Is(aerr, syscall.EAGAIN):
					return false // wait until the listener is readable
				case errors.Is(aerr, syscall.EINTR), errors.Is(aerr, syscall.ECONNABORTED):
					continue
				case aerr != nil:
					return true
				}
				a := sockaddrAddr(sa)
				if !a.IsValid() || !blocked(a) {
					return true
				}
				_ = syscall.SetsockoptLinger(nfd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1, Linger: 0})
				_ = syscall.Close(nfd)
				closed(a)
			}
		})
		if err != nil {
			if ra.closed.Load() { // the poller's "use of closed file"
				err = net.ErrClosed
			}
			return nil, &net.OpError{Op: "accept", Net: "tcp", Err: err}
		}
		if aerr != nil {
			return nil, acceptError(aerr)
		}
		f := os.NewFile(uintptr(nfd), "")
		c, err := net.FileConn(f) // a dup of nfd, registered with the poller
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("accept: %w", err)
		}
		return c, nil
	}
}

// acceptError wraps an accept4 error as net.TCPListener.Accept does, so that
// http.Server retries the temporary ones (EMFILE, ENFILE) after a pause
// rather than stop serving.
func acceptError(err error) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", err)}
}

// sockaddrAddr is a peer's IP address; invalid for other address families.
func sockaddrAddr(sa syscall.Sockaddr) netip.Addr {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr)
	case *syscall.SockaddrInet6:
		return netip.AddrFrom16(sa.Addr)
	}
	return netip.Addr{}
}
