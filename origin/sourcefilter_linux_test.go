//go:build linux

package origin

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

// TestSourceFilterDropsBlockedSources attaches the kernel filter to a real
// listener: a filtered source's connect gets no answer (it times out), other
// sources connect, and clearing the filter lets the first one in again.
func TestSourceFilterDropsBlockedSources(t *testing.T) {
	ln, err := listenTCP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	f := newSourceFilter(ln)
	if f == nil {
		t.Fatal("no source filter for a TCP listener")
	}
	addr := ln.Addr().String()
	// Also an IPv6 entry and other IPv4 ones, to exercise both parts.
	blocked := []netip.Addr{netip.MustParseAddr("127.0.0.9"), netip.MustParseAddr("2001:db8::"), netip.MustParseAddr("127.0.0.2")}
	if err := f.set(blocked); err != nil {
		t.Fatal(err)
	}
	if !dropped(t, "127.0.0.2", addr) {
		t.Fatal("a filtered source connected")
	}
	mustConnect(t, "127.0.0.3", addr)
	mustConnect(t, "127.0.0.1", addr)
	if err := f.set(nil); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, "127.0.0.2", addr)  // no longer filtered
	if err := f.set(nil); err != nil { // nothing attached: no error
		t.Fatal(err)
	}
}

// TestSourceFilterIPv6 filters an IPv6 listener by /64: ::1's /64 is
// dropped, and a filter holding only other prefixes lets ::1 in.
func TestSourceFilterIPv6(t *testing.T) {
	ln, err := listenTCP(context.Background(), "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	go acceptAndClose(ln)
	f := newSourceFilter(ln)
	addr := ln.Addr().String()
	if err := f.set([]netip.Addr{netip.MustParseAddr("2001:db8::"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("0:0:0:1::")}); err != nil {
		t.Fatal(err)
	}
	mustConnect(t, "::1", addr) // only other sources filtered
	if err := f.set([]netip.Addr{sourceKey(netip.MustParseAddr("::1"))}); err != nil {
		t.Fatal(err)
	}
	if !dropped(t, "::1", addr) {
		t.Fatal("::1 connected with its /64 filtered")
	}
}

// TestSourceFilterHoldsAtMostItsBound checks that a program for more than
// maxFilteredSources sources is accepted by the kernel (it keeps the first
// ones) and that the largest program fits the kernel's 4,096 instructions.
func TestSourceFilterHoldsAtMostItsBound(t *testing.T) {
	ln, err := listenTCP(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var srcs []netip.Addr
	for i := 0; i < maxFilteredSources+10; i++ {
		srcs = append(srcs, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(i >> 8), byte(i)}))
	}
	if n := len(filterProgram(srcs[:maxFilteredSources])); n > 4096 {
		t.Fatalf("%d instructions for %d IPv6 sources, over the kernel's 4096", n, maxFilteredSources)
	}
	if err := newSourceFilter(ln).set(srcs); err != nil {
		t.Fatal(err)
	}
}

// acceptAndClose accepts and closes whatever gets through to ln, until ln
// is closed.
func acceptAndClose(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}
