package origin

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// fakeClock is an injectable clock for the refusal table.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testTable(t *testing.T, limit, max int, exempt ...string) (*refusalTable, *fakeClock) {
	t.Helper()
	p, err := parseExempt(exempt)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	lim := RefusalLimits{RefusalsPerSource: limit, RefusalWindow: 10 * time.Second, RefusalBlock: 10 * time.Second}
	return newRefusalTable(lim, p, max, clk.now), clk
}

func TestRefusalTableBlocksOverTheLimitUntilThePenaltyEnds(t *testing.T) {
	tb, clk := testTable(t, 3, 100)
	bad, good := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	for i := range 3 {
		if blocked, _ := tb.refused(bad); blocked {
			t.Fatalf("refusal %d of a limit of 3: blocked", i+1)
		}
	}
	if tb.blocked(bad) {
		t.Fatal("blocked at the limit, want only past it")
	}
	if blocked, started := tb.refused(bad); !blocked || !started {
		t.Fatalf("4th refusal: blocked %v started %v, want both", blocked, started)
	}
	if blocked, started := tb.refused(bad); !blocked || started {
		t.Fatalf("a refusal while blocked: blocked %v started %v, want blocked, not started again", blocked, started)
	}
	if !tb.blocked(bad) {
		t.Fatal("the source over the limit is not closed at accept")
	}
	if tb.blocked(good) {
		t.Fatal("another source is closed at accept")
	}
	clk.advance(10*time.Second - time.Millisecond)
	if !tb.blocked(bad) {
		t.Fatal("the block ended before refusal_block")
	}
	clk.advance(time.Millisecond)
	if tb.blocked(bad) {
		t.Fatal("still blocked after refusal_block")
	}
	if n := tb.blocking.Load(); n != 0 {
		t.Fatalf("blocking = %d after the block ended, want 0 (accept takes no lock)", n)
	}
	// After the penalty the source starts a fresh window.
	for i := range 3 {
		if blocked, _ := tb.refused(bad); blocked {
			t.Fatalf("refusal %d after the penalty: blocked", i+1)
		}
	}
	if blocked, _ := tb.refused(bad); !blocked {
		t.Fatal("over the limit again after the penalty: not blocked")
	}
}

func TestRefusalTableCountsInAWindow(t *testing.T) {
	tb, clk := testTable(t, 3, 100)
	a := netip.MustParseAddr("192.0.2.1")
	for round := range 5 {
		for i := range 3 {
			if blocked, _ := tb.refused(a); blocked {
				t.Fatalf("round %d refusal %d: blocked, want the window to have started over", round, i+1)
			}
		}
		clk.advance(10 * time.Second)
	}
}

func TestRefusalTableSourcesExemptAndIPv6(t *testing.T) {
	tb, _ := testTable(t, 1, 100, "10.0.0.0/8", "192.0.2.7", "::1/128")
	for _, s := range []string{"10.1.2.3", "192.0.2.7", "::ffff:10.9.9.9", "::1"} {
		a := netip.MustParseAddr(s)
		for range 5 {
			if blocked, _ := tb.refused(a); blocked {
				t.Fatalf("exempt %s: blocked", s)
			}
		}
	}
	if n := tb.len(); n != 0 {
		t.Fatalf("exempt sources are tracked: %d entries", n)
	}
	// An IPv6 source is its /64: another address of the same /64 is blocked too.
	tb.refused(netip.MustParseAddr("2001:db8:1:2::1"))
	tb.refused(netip.MustParseAddr("2001:db8:1:2::ffff"))
	if !tb.blocked(netip.MustParseAddr("2001:db8:1:2:abcd::9")) {
		t.Error("an address of a blocked /64 is not closed at accept")
	}
	if tb.blocked(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Error("another /64 is closed at accept")
	}
	// An IPv4-mapped peer is its IPv4 address.
	tb.refused(netip.MustParseAddr("192.0.2.9"))
	tb.refused(netip.MustParseAddr("::ffff:192.0.2.9"))
	if !tb.blocked(netip.MustParseAddr("192.0.2.9")) {
		t.Error("the IPv4 and IPv4-mapped forms counted as two sources")
	}
	if _, err := parseExempt([]string{"not-an-address"}); err == nil {
		t.Error("a bad refusal_exempt entry parsed")
	}
}

// TestRefusalTableIsBounded sprays refusals from many distinct addresses:
// the table never holds more than its cap, and a blocked source that keeps
// connecting stays blocked through the spray (it is the most recent).
func TestRefusalTableIsBounded(t *testing.T) {
	const max = 64
	tb, _ := testTable(t, 2, max)
	bad := netip.MustParseAddr("198.51.100.1")
	for range 3 {
		tb.refused(bad)
	}
	for i := range 10_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		tb.refused(a)
		if i%16 == 0 && !tb.blocked(bad) {
			t.Fatalf("after %d sprayed sources the blocked source was forgotten", i+1)
		}
		if n := tb.len(); n > max {
			t.Fatalf("%d sources tracked, cap %d", n, max)
		}
	}
	// Block many, then spray: forgotten blocks are no longer counted, and
	// accept goes back to taking no lock.
	tb2, _ := testTable(t, 1, max)
	for i := range max {
		a := netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
		tb2.refused(a)
		tb2.refused(a)
	}
	if n := tb2.blocking.Load(); n != max {
		t.Fatalf("blocking = %d, want %d", n, max)
	}
	for i := range 2 * max {
		tb2.refused(netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}))
	}
	if n := tb2.blocking.Load(); n != 0 {
		t.Fatalf("blocking = %d after every blocked source was forgotten, want 0", n)
	}
}

func TestRefusalLimiterOnlyWithATokenAndALimit(t *testing.T) {
	log := zerolog.Nop()
	for _, cfg := range []Config{
		DefaultConfig(),  // no token
		{AuthToken: "t"}, // no limit: the zero value
		{AuthToken: "t", RefusalLimits: RefusalLimits{RefusalsPerSource: -1}},
	} {
		l, err := newRefusalLimiter(cfg.withDefaults(), log, nil)
		if err != nil || l != nil {
			t.Errorf("%+v: limiter %v err %v, want none", cfg.RefusalLimits, l, err)
		}
		// A nil limiter limits nothing.
		if l.refused("192.0.2.1:1") {
			t.Error("a nil limiter blocked")
		}
	}
	cfg := DefaultConfig()
	cfg.AuthToken = "t"
	if l, err := newRefusalLimiter(cfg, log, nil); err != nil || l == nil {
		t.Fatalf("defaults with a token: limiter %v err %v, want one", l, err)
	}
	cfg.RefusalExempt = []string{"10.0.0.0/33"}
	if _, err := newRefusalLimiter(cfg, log, nil); err == nil {
		t.Error("a bad refusal_exempt entry was accepted")
	}
}

// BenchmarkRefusalTableBlocked is the cost accept adds: with nobody blocked,
// and with a blocked source among many tracked ones.
func BenchmarkRefusalTableBlocked(b *testing.B) {
	p, _ := parseExempt(nil)
	lim := RefusalLimits{RefusalsPerSource: 1, RefusalWindow: time.Minute, RefusalBlock: time.Minute}
	tb := newRefusalTable(lim, p, refusalSources, time.Now)
	a := netip.MustParseAddr("192.0.2.1")
	b.Run("none blocked", func(b *testing.B) {
		for b.Loop() {
			tb.blocked(a)
		}
	})
	for i := range refusalSources {
		tb.refused(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
		tb.refused(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	b.Run("many blocked", func(b *testing.B) {
		for b.Loop() {
			tb.blocked(a)
		}
	})
}

// TestRefusalTableBlockedSources checks what the kernel filter is made of:
// the sources blocked now, the most recently blocked first, at most max of
// them, when the first of those blocks ends, and expired blocks lifted.
func TestRefusalTableBlockedSources(t *testing.T) {
	tb, clk := testTable(t, 0, 100)
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.3")
	if srcs, next := tb.blockedSources(clk.now(), 10); len(srcs) != 0 || !next.IsZero() {
		t.Fatalf("nothing blocked: %v %v", srcs, next)
	}
	for _, s := range []netip.Addr{a, b, c} { // a limit of 0: each first refusal blocks
		if _, started := tb.refused(s); !started {
			t.Fatalf("%v not blocked", s)
		}
		clk.advance(time.Second)
	}
	srcs, next := tb.blockedSources(clk.now(), 2)
	want := []netip.Addr{c, sourceKey(b)} // the two most recent; b by its /64
	if len(srcs) != 2 || srcs[0] != want[0] || srcs[1] != want[1] {
		t.Fatalf("blocked sources %v, want %v", srcs, want)
	}
	if wantNext := time.Unix(1_000_000, 0).Add(11 * time.Second); !next.Equal(wantNext) { // b's block, from t+1 s
		t.Fatalf("next end %v, want %v (b's)", next, wantNext)
	}
	clk.advance(7*time.Second + time.Millisecond) // a's block (to t+10 s) is over
	srcs, _ = tb.blockedSources(clk.now(), 10)
	if len(srcs) != 2 || tb.blocking.Load() != 2 {
		t.Fatalf("after a's block: %v (blocking %d), want c and b", srcs, tb.blocking.Load())
	}
	clk.advance(10 * time.Second)
	if srcs, next := tb.blockedSources(clk.now(), 10); len(srcs) != 0 || !next.IsZero() || tb.blocking.Load() != 0 {
		t.Fatalf("after every block: %v %v (blocking %d)", srcs, next, tb.blocking.Load())
	}
}
