//go:build linux

package origin

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// sourceFilter drops, in the kernel, what blocked sources send to the
// origin's listening socket: a classic BPF socket filter (SO_ATTACH_FILTER)
// on the listener, which the kernel runs on every packet that reaches it,
// the SYN of a new connection included, before any TCP handling
// (tcp_v4_rcv/tcp_v6_rcv call tcp_filter before a listener sees a packet).
// A blocked source's connection attempt then costs the origin's host one
// filter run: no SYN-ACK, no handshake, no accept and no reset, and the
// client waits for its connect to time out instead of trying again at once.
// Connections already accepted have sockets of their own and are not
// filtered. Unprivileged: any process may filter its own sockets.
type sourceFilter struct {
	rc syscall.RawConn // the listener's
}

// maxFilteredSources bounds the sources one filter holds (the most
// recently blocked ones; others are still closed at accept): 256 IPv6
// entries are 1,280 instructions, under the kernel's 4,096.
const maxFilteredSources = 256

// newSourceFilter returns the filter of ln, or nil when ln is not a
// *net.TCPListener.
func newSourceFilter(ln net.Listener) *sourceFilter {
	rc := tcpRawConn(ln)
	if rc == nil {
		return nil
	}
	return &sourceFilter{rc: rc}
}

// set makes the filter drop the packets of srcs (source keys, see
// sourceKey: IPv4 addresses, IPv6 /64 prefixes as their first address), at
// most maxFilteredSources of them (the first ones); with no srcs it
// removes the filter. It fails when the kernel refuses the program or the
// listener is closed. Not safe for concurrent use: one caller at a time.
func (f *sourceFilter) set(srcs []netip.Addr) error {
	if len(srcs) > maxFilteredSources {
		srcs = srcs[:maxFilteredSources]
	}
	var serr error
	err := f.rc.Control(func(fd uintptr) {
		if len(srcs) == 0 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
			if serr == unix.ENOENT { // none attached
				serr = nil
			}
			return
		}
		prog := filterProgram(srcs)
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("origin: source filter of %d sources: %w", len(srcs), err)
	}
	return nil
}

// skfNetOff makes a BPF load's offset relative to the packet's network
// (IP) header rather than to the transport header a TCP socket's filter
// starts at (linux/filter.h SKF_NET_OFF).
const skfNetOff = -0x100000

// Classic BPF instruction codes (linux/bpf_common.h).
const (
	bpfLdB  = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
	bpfLdW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfRsh  = unix.BPF_ALU | unix.BPF_RSH | unix.BPF_K
	bpfJeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJa   = unix.BPF_JMP | unix.BPF_JA
	bpfRet  = unix.BPF_RET | unix.BPF_K
	bpfDrop = 0
	bpfKeep = 0xffffffff
)

// netOff is offset off into the IP header, as a BPF load's k.
func netOff(off int32) uint32 { return uint32(skfNetOff + off) }

// filterProgram is the classic BPF program that drops packets whose IPv4
// source is one of srcs' IPv4 addresses, or whose IPv6 source is in the
// /64 of one of srcs' IPv6 ones, and keeps every other packet.
func filterProgram(srcs []netip.Addr) []unix.SockFilter {
	var v4, v6 []netip.Addr
	for _, a := range srcs {
		if a = a.Unmap(); a.Is4() {
			v4 = append(v4, a)
		} else if a.Is6() {
			v6 = append(v6, a)
		}
	}
	insn := func(code uint16, jt, jf uint8, k uint32) unix.SockFilter {
		return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
	}
	p := []unix.SockFilter{
		insn(bpfLdB, 0, 0, netOff(0)), // the IP version, high nibble of byte 0
		insn(bpfRsh, 0, 0, 4),
		insn(bpfJeq, 1, 0, 4), // IPv4: skip the jump to the IPv6 part
		insn(bpfJa, 0, 0, 0),  // its offset is set below
	}
	toV6 := len(p) - 1
	p = append(p, insn(bpfLdW, 0, 0, netOff(12))) // IPv4 source address
	for _, a := range v4 {
		b := a.As4()
		p = append(p, insn(bpfJeq, 0, 1, uint32(b[0])<<24|uint32(b[1])<<16|uint32(b[2])<<8|uint32(b[3])),
			insn(bpfRet, 0, 0, bpfDrop))
	}
	p = append(p, insn(bpfRet, 0, 0, bpfKeep))
	p[toV6].K = uint32(len(p) - toV6 - 1)
	// IPv6: A still holds the version.
	p = append(p, insn(bpfJeq, 1, 0, 6), insn(bpfRet, 0, 0, bpfKeep))
	for _, a := range v6 {
		b := a.As16()
		w0 := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		w1 := uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7])
		p = append(p,
			insn(bpfLdW, 0, 0, netOff(8)), // source address, first word
			insn(bpfJeq, 0, 3, w0),
			insn(bpfLdW, 0, 0, netOff(12)), // second word: the /64 is done
			insn(bpfJeq, 0, 1, w1),
			insn(bpfRet, 0, 0, bpfDrop))
	}
	return append(p, insn(bpfRet, 0, 0, bpfKeep))
}
