package origin

import (
	"container/list"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/logging"
)

// RefusalLimits are the origin's per-source limit on refused work: a source
// address that keeps sending wrong tokens has its connections closed right
// at accept, before a byte of them is read, for a while. They are part of
// the `origin` section of the configuration (inline in Config). They apply
// only while Config.AuthToken is set: without a token nothing is refused.
//
// A source is the TCP peer's IP address (an IPv6 address by its /64: one
// host holds a whole /64). Behind a reverse proxy every client is the
// proxy's address: list it in RefusalExempt, or one client's wrong token
// would close everybody's connections.
type RefusalLimits struct {
	// RefusalsPerSource is how many auth refusals (HTTP 401s, and wrong
	// ?access_token= answered with an unauthorized frame) one source may
	// get within RefusalWindow; the next one closes its connections at
	// accept for RefusalBlock. 0 (the zero value): no limit. DefaultConfig
	// sets DefaultRefusalsPerSource.
	RefusalsPerSource int `yaml:"refusals_per_source"`
	// RefusalWindow is the window RefusalsPerSource counts in, from a
	// source's first refusal. Default 10 s.
	RefusalWindow time.Duration `yaml:"refusal_window"`
	// RefusalBlock is how long a source over the limit has its connections
	// closed at accept. Default 10 s.
	RefusalBlock time.Duration `yaml:"refusal_block"`
	// RefusalExempt lists addresses or CIDR prefixes ("10.0.0.5",
	// "10.0.0.0/8", "::1/128") never limited: a reverse proxy, a NAT many
	// users share. The zero value exempts nothing; DefaultConfig exempts
	// loopback (127.0.0.0/8, ::1), where a local TLS proxy would be.
	RefusalExempt []string `yaml:"refusal_exempt"`
}

// DefaultRefusalsPerSource is DefaultConfig's RefusalsPerSource: 20
// refusals per 10 s is far more than a person mistyping a token, or a
// client retrying with backoff, gets.
const DefaultRefusalsPerSource = 20

// defaultRefusalExempt is DefaultConfig's RefusalExempt.
func defaultRefusalExempt() []string { return []string{"127.0.0.0/8", "::1/128"} }

func (l RefusalLimits) withDefaults() RefusalLimits {
	if l.RefusalsPerSource < 0 {
		l.RefusalsPerSource = 0
	}
	if l.RefusalWindow <= 0 {
		l.RefusalWindow = 10 * time.Second
	}
	if l.RefusalBlock <= 0 {
		l.RefusalBlock = 10 * time.Second
	}
	return l
}

// refusalSources bounds the number of source addresses tracked. When it is
// full, the source seen least recently is forgotten: a flood from many
// addresses cannot grow the table, and a blocked source that keeps
// connecting stays recent, so it is the last to go.
const refusalSources = 16384

// refusalLimiter is the origin's RefusalLimits at work: a table of recently
// refused sources, a listener wrapper that closes a blocked source's
// connections at accept, and their metrics and log lines. A nil
// *refusalLimiter limits nothing. Safe for concurrent use.
type refusalLimiter struct {
	table *refusalTable
	log   zerolog.Logger
	m     *Metrics
	// blockLog and closeLog pace the log lines of sources blocked and of
	// connections closed at accept.
	blockLog, closeLog logging.Every

	kf kernelFilter
}

// kernelFilter keeps the listener's source filter (sourcefilter_linux.go)
// equal to the blocked sources: rebuilt when a block starts and when the
// earliest one runs out. Its methods are safe for concurrent use.
type kernelFilter struct {
	mu     sync.Mutex
	f      *sourceFilter // nil: none (not Linux, not TCP, or given up)
	timer  *time.Timer   // fires when the earliest block in the filter runs out
	closed bool
}

// newRefusalLimiter returns the limiter of cfg (defaults applied), or nil
// when cfg has no auth token or no limit. It fails on an entry of
// RefusalExempt that is neither an address nor a CIDR prefix.
func newRefusalLimiter(cfg Config, log zerolog.Logger, m *Metrics) (*refusalLimiter, error) {
	if cfg.AuthToken == "" || cfg.RefusalsPerSource <= 0 {
		return nil, nil
	}
	exempt, err := parseExempt(cfg.RefusalExempt)
	if err != nil {
		return nil, err
	}
	t := newRefusalTable(cfg.RefusalLimits, exempt, refusalSources, time.Now)
	return &refusalLimiter{table: t, log: log, m: m}, nil
}

// parseExempt parses RefusalExempt: addresses (one host) or CIDR prefixes.
func parseExempt(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if strings.Contains(s, "/") {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("origin.refusal_exempt %q: %w", s, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("origin.refusal_exempt %q: want an address or a CIDR prefix: %w", s, err)
		}
		a = a.Unmap().WithZone("")
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// refused counts one auth refusal of a request from remoteAddr (an
// http.Request's RemoteAddr, "ip:port"), and reports whether its source is
// now blocked: the caller then closes the connection after its answer.
func (l *refusalLimiter) refused(remoteAddr string) (blocked bool) {
	if l == nil {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return false
	}
	blocked, started := l.table.refused(ap.Addr())
	if started {
		l.refilter()
		l.m.SourceBlocked()
		if n, ok := l.blockLog.Tick(); ok {
			l.log.Warn().Int64("blocked", n).Str("source", sourceKey(ap.Addr()).String()).
				Int("refusals_per_source", l.table.limit).Dur("refusal_window", l.table.window).Dur("refusal_block", l.table.block).
				Msg("source address blocked: too many auth refusals; its connections are closed at accept (logged at most every 10 s; blocked counts the sources since the last line)")
		}
	}
	return blocked
}

// listener returns ln, wrapped so that it closes a blocked source's
// connections at accept; ln itself when l is nil.
func (l *refusalLimiter) listener(ln net.Listener) net.Listener {
	if l == nil {
		return ln
	}
	l.kf.mu.Lock()
	l.kf.f, l.kf.closed = newSourceFilter(ln), false
	l.kf.mu.Unlock()
	l.refilter() // sources blocked already
	return &refusalListener{Listener: ln, l: l, raw: newRawAcceptor(ln)}
}

// refilter makes the kernel filter drop the packets of the sources blocked
// now (the most recent maxFilteredSources), and sets its timer for the
// first of their blocks to run out. A filter the kernel refuses is given up
// with a warning: blocked sources are then closed at accept only.
func (l *refusalLimiter) refilter() {
	k := &l.kf
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.f == nil || k.closed {
		return
	}
	srcs, next := l.table.blockedSources(l.table.now(), maxFilteredSources)
	if err := k.f.set(srcs); err != nil {
		l.log.Warn().Err(err).Msg("dropping blocked sources' packets in the kernel failed; they are closed at accept instead")
		k.f = nil
		l.m.SourcesFiltered(0)
		return
	}
	l.m.SourcesFiltered(len(srcs))
	if next.IsZero() {
		return
	}
	wait := time.Until(next) + time.Millisecond // past the block's end
	if k.timer == nil {
		k.timer = time.AfterFunc(wait, l.refilter)
	} else {
		k.timer.Reset(wait)
	}
}

// stopFilter stops the filter's timer: its listener is closed.
func (l *refusalLimiter) stopFilter() {
	k := &l.kf
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	if k.timer != nil {
		k.timer.Stop()
	}
}

// refusalListener closes a blocked source's connections as it accepts them,
// before any TLS or HTTP read, and hands the others on; the rest is the
// wrapped listener's. Safe for concurrent use (the HTTP server's accept
// loop is its one caller).
type refusalListener struct {
	net.Listener
	l   *refusalLimiter
	raw *rawAcceptor // nil: accept through Listener (accept_linux.go)
}

// Accept returns the next connection from a source that is not blocked,
// closing (with a reset: no TIME_WAIT left on this side) the others on the
// way. Its errors are the wrapped listener's.
func (rl *refusalListener) Accept() (net.Conn, error) {
	if rl.raw != nil {
		return rl.raw.accept(rl.l.table.blocked, rl.closedAtAccept)
	}
	for {
		c, err := rl.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc, ok := c.(*net.TCPConn)
		if !ok {
			return c, nil
		}
		ra, ok := tc.RemoteAddr().(*net.TCPAddr)
		if !ok || !rl.l.table.blocked(ra.AddrPort().Addr()) {
			return c, nil
		}
		_ = tc.SetLinger(0)
		_ = tc.Close()
		rl.closedAtAccept(ra.AddrPort().Addr())
	}
}

// Close closes the listener.
func (rl *refusalListener) Close() error {
	rl.l.stopFilter()
	if rl.raw != nil {
		_ = rl.raw.close()
	}
	return rl.Listener.Close()
}

// closedAtAccept counts a connection of source a closed at accept, and logs
// at most one line per 10 s about them.
func (rl *refusalListener) closedAtAccept(a netip.Addr) {
	rl.l.m.ClosedAtAccept()
	if n, ok := rl.l.closeLog.Tick(); ok {
		rl.l.log.Warn().Int64("closed", n).Str("source", sourceKey(a).String()).
			Msg("connection closed at accept: its source address is blocked after too many auth refusals (logged at most every 10 s; closed counts the connections since the last line, from any blocked source)")
	}
}

// sourceKey is the source a peer address counts as: the address itself for
// IPv4 (also IPv4-mapped IPv6), its /64 for IPv6, without zone.
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64) // cannot fail: 64 ≤ 128
		return p.Addr()
	}
	return a
}

// refusalTable counts auth refusals per source in a fixed window and
// blocks a source that goes over the limit for a while. It holds at most
// max sources, forgetting the least recently seen one to make room. Safe
// for concurrent use.
type refusalTable struct {
	limit         int
	window, block time.Duration
	exempt        []netip.Prefix
	max           int
	now           func() time.Time

	// blocking counts the entries with a block set, expired or not: while
	// it is 0, blocked answers without taking mu, so that accepting costs
	// nothing while nobody is blocked.
	blocking atomic.Int64

	mu      sync.Mutex
	sources map[netip.Addr]*list.Element // of *refusalEntry
	recent  list.List                    // most recently seen first
	// blockedSet holds the entries with a block set, expired or not
	// (blocking is its size): what the kernel filter is made of.
	blockedSet map[netip.Addr]*refusalEntry
}

// refusalEntry is one source's count in its current window, and its block.
type refusalEntry struct {
	src   netip.Addr
	start time.Time // the window's start
	n     int       // refusals in the window
	until time.Time // blocked until; zero: not blocked
}

// newRefusalTable returns an empty table for lim (defaults applied) that
// never limits a source in exempt, tracks at most max sources and reads
// the time from now.
func newRefusalTable(lim RefusalLimits, exempt []netip.Prefix, max int, now func() time.Time) *refusalTable {
	if max < 1 {
		max = 1
	}
	return &refusalTable{
		limit: lim.RefusalsPerSource, window: lim.RefusalWindow, block: lim.RefusalBlock,
		exempt: exempt, max: max, now: now,
		sources: make(map[netip.Addr]*list.Element), blockedSet: make(map[netip.Addr]*refusalEntry),
	}
}

// isExempt reports whether peer address a is never limited.
func (t *refusalTable) isExempt(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range t.exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refused counts one refusal from peer address a. It reports whether a's
// source is blocked now, and whether this refusal started the block.
func (t *refusalTable) refused(a netip.Addr) (blocked, started bool) {
	if !a.IsValid() || t.isExempt(a) {
		return false, false
	}
	k := sourceKey(a)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entry(k, now)
	if !e.until.IsZero() {
		if now.Before(e.until) {
			return true, false // a keep-alive connection accepted before the block
		}
		t.lift(e, now)
	}
	if now.Sub(e.start) >= t.window {
		e.start, e.n = now, 0
	}
	e.n++
	if e.n <= t.limit {
		return false, false
	}
	e.until, e.n = now.Add(t.block), 0
	t.blockedSet[e.src] = e
	t.blocking.Add(1)
	return true, true
}

// lift ends e's block, at now. t.mu is held.
func (t *refusalTable) lift(e *refusalEntry, now time.Time) {
	e.until, e.start, e.n = time.Time{}, now, 0
	delete(t.blockedSet, e.src)
	t.blocking.Add(-1)
}

// blockedSources returns the sources blocked at now, the most recently
// blocked first, at most max of them, and when the first of their blocks
// runs out (zero when none is blocked). Blocks found expired are lifted.
func (t *refusalTable) blockedSources(now time.Time, max int) ([]netip.Addr, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := make([]*refusalEntry, 0, len(t.blockedSet))
	for _, e := range t.blockedSet {
		if now.Before(e.until) {
			live = append(live, e)
		} else {
			t.lift(e, now)
		}
	}
	slices.SortFunc(live, func(a, b *refusalEntry) int { return b.until.Compare(a.until) })
	live = live[:min(len(live), max)]
	srcs := make([]netip.Addr, len(live))
	var next time.Time
	for i, e := range live {
		srcs[i] = e.src
		if next.IsZero() || e.until.Before(next) {
			next = e.until
		}
	}
	return srcs, next
}

// entry returns k's entry, made most recent, adding it (and forgetting the
// least recent one when the table is full) if it is new. t.mu is held.
func (t *refusalTable) entry(k netip.Addr, now time.Time) *refusalEntry {
	if el, ok := t.sources[k]; ok {
		t.recent.MoveToFront(el)
		return el.Value.(*refusalEntry)
	}
	for len(t.sources) >= t.max {
		t.forget(t.recent.Back())
	}
	e := &refusalEntry{src: k, start: now}
	t.sources[k] = t.recent.PushFront(e)
	return e
}

// forget removes el's entry. t.mu is held.
func (t *refusalTable) forget(el *list.Element) {
	e := t.recent.Remove(el).(*refusalEntry)
	delete(t.sources, e.src)
	if !e.until.IsZero() {
		delete(t.blockedSet, e.src)
		t.blocking.Add(-1)
	}
}

// blocked reports whether a connection from peer address a is to be closed
// at accept: its source is blocked and the block has not run out. A block
// found expired is lifted. While no source is blocked it takes no lock.
func (t *refusalTable) blocked(a netip.Addr) bool {
	if t.blocking.Load() == 0 {
		return false
	}
	k := sourceKey(a)
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.sources[k]
	if !ok {
		return false
	}
	e := el.Value.(*refusalEntry)
	if e.until.IsZero() {
		return false
	}
	if t.now().Before(e.until) {
		t.recent.MoveToFront(el)
		return true
	}
	t.lift(e, t.now())
	return false
}

// len is the number of sources tracked.
func (t *refusalTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sources)
}
