package netpolicy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeResolver answers from a fixed table and counts lookups; it never touches the network.
type fakeResolver struct {
	hosts map[string][]string // lower-case name without trailing dot → addresses (zone allowed)
	block bool                // wait for ctx instead of answering

	mu    sync.Mutex
	calls int
}

func (r *fakeResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	r.mu.Lock()
	r.calls++
	r.mu.Unlock()
	if r.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	list, ok := r.hosts[strings.TrimSuffix(strings.ToLower(host), ".")]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	out := make([]net.IPAddr, 0, len(list))
	for _, s := range list {
		a := netip.MustParseAddr(s)
		out = append(out, net.IPAddr{IP: net.IP(a.AsSlice()), Zone: a.Zone()})
	}
	return out, nil
}

func (r *fakeResolver) lookups() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// pipeDialer records the checked addresses the policy dials and hands back one end of an
// in-memory pipe, so these tests send no traffic at all.
type pipeDialer struct {
	fail map[string]bool // addresses whose dial fails

	mu    sync.Mutex
	addrs []string
}

func (d *pipeDialer) dial(_ context.Context, _, address string) (net.Conn, error) {
	d.mu.Lock()
	d.addrs = append(d.addrs, address)
	d.mu.Unlock()
	if d.fail[address] {
		return nil, errors.New("connection refused (fake)")
	}
	c1, c2 := net.Pipe()
	c2.Close()
	return c1, nil
}

func (d *pipeDialer) dialed() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.addrs)
}

var testHosts = map[string][]string{
	"public.test":              {"8.8.8.8"},
	"public2.test":             {"8.8.8.8", "1.1.1.1"},
	"v6.test":                  {"2606:4700:4700::1111"},
	"dual.test":                {"2606:4700:4700::1111", "8.8.8.8"},
	"dup.test":                 {"8.8.8.8", "8.8.8.8"},
	"rebind.test":              {"10.0.0.1"},
	"metadata.google.internal": {"169.254.169.254"},
	"mixed.test":               {"8.8.8.8", "10.0.0.1"},
	"mixed-order.test":         {"10.0.0.1", "8.8.8.8"},
	"mapped.test":              {"::ffff:127.0.0.1"},
	"nat64.test":               {"64:ff9b::7f00:1"},
	"nat64-public.test":        {"64:ff9b::808:808"},
	"zoned.test":               {"2606:4700:4700::1111%eth0"},
	"linklocal6.test":          {"fe80::1%eth0"},
	"unspec.test":              {"0.0.0.0"},
	"multicast.test":           {"224.0.0.1"},
	"loop6.test":               {"::1"},
	"target.local":             {"127.0.0.1"},
	"alias.test":               {"127.0.0.1"},
	"empty.test":               {},
	"localhost":                {"127.0.0.1"},
}

func TestDialContextChecks(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		network string
		addr    string
		fail    []string // dial failures to simulate
		want    outcome  // ignored when dialErr is set
		dialErr bool     // want the simulated dial failure
		dials   []string // checked addresses dialled, in order
		lookups int
	}{
		{"public name", Config{}, "tcp", "public.test:80", nil, allowed, false, []string{"8.8.8.8:80"}, 1},
		{"public name upper case, trailing dot", Config{}, "tcp", "PUBLIC.test.:80", nil, allowed, false, []string{"8.8.8.8:80"}, 1},
		{"public v6 name", Config{}, "tcp", "v6.test:443", nil, allowed, false, []string{"[2606:4700:4700::1111]:443"}, 1},
		{"public NAT64 name", Config{}, "tcp", "nat64-public.test:80", nil, allowed, false, []string{"[64:ff9b::808:808]:80"}, 1},
		{"duplicates dialled once", Config{}, "tcp", "dup.test:80", []string{"8.8.8.8:80"}, allowed, true, []string{"8.8.8.8:80"}, 1},
		{"fallback to second address", Config{}, "tcp", "public2.test:80", []string{"8.8.8.8:80"}, allowed, false, []string{"8.8.8.8:80", "1.1.1.1:80"}, 1},
		{"tcp4 filters v6", Config{}, "tcp4", "dual.test:80", nil, allowed, false, []string{"8.8.8.8:80"}, 1},
		{"tcp6 filters v4", Config{}, "tcp6", "dual.test:80", nil, allowed, false, []string{"[2606:4700:4700::1111]:80"}, 1},
		{"public literal", Config{}, "tcp", "8.8.8.8:80", nil, allowed, false, []string{"8.8.8.8:80"}, 0},
		{"name resolving to private", Config{}, "tcp", "rebind.test:80", nil, blocked, false, nil, 1},
		{"metadata name", Config{}, "tcp", "metadata.google.internal:80", nil, blocked, false, nil, 1},
		{"public then private", Config{}, "tcp", "mixed.test:80", nil, blocked, false, nil, 1},
		{"private then public", Config{}, "tcp", "mixed-order.test:80", nil, blocked, false, nil, 1},
		{"name resolving to mapped loopback", Config{}, "tcp", "mapped.test:80", nil, blocked, false, nil, 1},
		{"name resolving to NAT64 loopback", Config{}, "tcp", "nat64.test:80", nil, blocked, false, nil, 1},
		{"name resolving to zoned address", Config{}, "tcp", "zoned.test:80", nil, blocked, false, nil, 1},
		{"name resolving to link-local v6", Config{AllowPrivate: true}, "tcp", "linklocal6.test:80", nil, blocked, false, nil, 1},
		{"name resolving to 0.0.0.0", Config{}, "tcp", "unspec.test:80", nil, blocked, false, nil, 1},
		{"name resolving to ::1", Config{}, "tcp", "loop6.test:80", nil, blocked, false, nil, 1},
		{"localhost not resolved", Config{}, "tcp", "localhost:80", nil, blocked, false, nil, 0},
		{"LOCALHOST. not resolved", Config{}, "tcp", "LOCALHOST.:80", nil, blocked, false, nil, 0},
		{"x.localhost not resolved", Config{}, "tcp", "x.localhost:80", nil, blocked, false, nil, 0},
		{"short hex literal", Config{}, "tcp", "0x7f.1:80", nil, blocked, false, nil, 0},
		{"decimal literal", Config{}, "tcp", "2130706433:80", nil, blocked, false, nil, 0},
		{"octal literal", Config{}, "tcp", "0177.0.0.1:80", nil, blocked, false, nil, 0},
		{"mapped literal", Config{}, "tcp", "[::ffff:127.0.0.1]:80", nil, blocked, false, nil, 0},
		{"zoned literal", Config{}, "tcp", "[fe80::1%eth0]:80", nil, blocked, false, nil, 0},
		{"bad numeric host", Config{}, "tcp", "1.2.3.4.5:80", nil, invalid, false, nil, 0},
		{"missing port", Config{}, "tcp", "public.test", nil, invalid, false, nil, 0},
		{"port zero", Config{}, "tcp", "public.test:0", nil, invalid, false, nil, 0},
		{"named port", Config{}, "tcp", "public.test:http", nil, invalid, false, nil, 0},
		{"name allow", Config{Allow: []string{"target.local:8090"}}, "tcp", "target.local:8090", nil, allowed, false, []string{"127.0.0.1:8090"}, 1},
		{"name allow other port", Config{Allow: []string{"target.local:8090"}}, "tcp", "target.local:8091", nil, blocked, false, nil, 1},
		{"name allow, other name same ip", Config{Allow: []string{"target.local:8090"}}, "tcp", "rebind.test:8090", nil, blocked, false, nil, 1},
		{"name allow still checks Deny", Config{Allow: []string{"target.local"}, Deny: []string{"127.0.0.0/8"}}, "tcp", "target.local:8090", nil, blocked, false, nil, 1},
		{"name allow never lifts multicast", Config{Allow: []string{"multicast.test"}}, "tcp", "multicast.test:80", nil, blocked, false, nil, 1},
		{"name allow localhost", Config{Allow: []string{"localhost:8090"}}, "tcp", "localhost:8090", nil, allowed, false, []string{"127.0.0.1:8090"}, 1},
		{"ip allow matches resolved address", Config{Allow: []string{"127.0.0.1:8090"}}, "tcp", "alias.test:8090", nil, allowed, false, []string{"127.0.0.1:8090"}, 1},
		{"ip allow, resolved address other port", Config{Allow: []string{"127.0.0.1:8090"}}, "tcp", "alias.test:8091", nil, blocked, false, nil, 1},
		{"deny resolved address", Config{Deny: []string{"8.8.8.0/24"}}, "tcp", "public.test:80", nil, blocked, false, nil, 1},
		{"deny name", Config{Deny: []string{"*.test"}}, "tcp", "public.test:80", nil, blocked, false, nil, 0},
		{"allow ports, public name", Config{Allow: []string{"127.0.0.1:8090"}, AllowPorts: []int{80, 443}}, "tcp", "public.test:8090", nil, blocked, false, nil, 1},
		{"allow ports, allowed ip:port", Config{Allow: []string{"127.0.0.1:8090"}, AllowPorts: []int{80, 443}}, "tcp", "alias.test:8090", nil, allowed, false, []string{"127.0.0.1:8090"}, 1},
		{"allow ports, other port", Config{AllowPorts: []int{80, 443}}, "tcp", "public.test:25", nil, blocked, false, nil, 0},
		{"deny ports", Config{DenyPorts: []int{25}}, "tcp", "8.8.8.8:25", nil, blocked, false, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &fakeResolver{hosts: testHosts}
			d := &pipeDialer{fail: map[string]bool{}}
			for _, a := range tt.fail {
				d.fail[a] = true
			}
			p := mustNew(t, tt.cfg, WithResolver(res))
			p.dial = d.dial
			conn, err := p.DialContext(context.Background(), tt.network, tt.addr)
			if conn != nil {
				conn.Close()
			}
			if tt.dialErr {
				if err == nil || !strings.Contains(err.Error(), "fake") {
					t.Errorf("DialContext(%q) = %v, want the simulated dial failure", tt.addr, err)
				}
			} else if got := outcomeOf(t, err); got != tt.want {
				t.Errorf("DialContext(%s, %q) = %v (%v), want %v", tt.network, tt.addr, got, err, tt.want)
			}
			if got := d.dialed(); !slices.Equal(got, tt.dials) {
				t.Errorf("DialContext(%q) dialled %q, want %q", tt.addr, got, tt.dials)
			}
			if got := res.lookups(); got != tt.lookups {
				t.Errorf("DialContext(%q) made %d lookups, want %d", tt.addr, got, tt.lookups)
			}
		})
	}
}

func TestDialContextOtherErrors(t *testing.T) {
	res := &fakeResolver{hosts: testHosts}
	d := &pipeDialer{}
	p := mustNew(t, Config{}, WithResolver(res))
	p.dial = d.dial
	ctx := context.Background()

	var dnsErr *net.DNSError
	if _, err := p.DialContext(ctx, "tcp", "nx.test:80"); !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("DialContext(nx.test) = %v, want a not-found *net.DNSError", err)
	}
	if _, err := p.DialContext(ctx, "tcp", "empty.test:80"); !errors.As(err, &dnsErr) {
		t.Errorf("DialContext(empty.test) = %v, want *net.DNSError", err)
	}
	if _, err := p.DialContext(ctx, "tcp4", "v6.test:80"); !errors.As(err, &dnsErr) {
		t.Errorf("DialContext(tcp4, v6.test) = %v, want *net.DNSError (no IPv4 address)", err)
	}
	if _, err := p.DialContext(ctx, "udp", "8.8.8.8:53"); err == nil || !strings.Contains(err.Error(), "unsupported network") {
		t.Errorf("DialContext(udp) = %v, want unsupported network", err)
	}
	if got := d.dialed(); len(got) != 0 {
		t.Errorf("dialled %q, want nothing", got)
	}
}

func TestDialContextHonoursContext(t *testing.T) {
	d := &pipeDialer{}
	res := &fakeResolver{block: true}
	p := mustNew(t, Config{}, WithResolver(res))
	p.dial = d.dial

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.DialContext(ctx, "tcp", "slow.test:80"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DialContext with a hanging resolver = %v, want context.DeadlineExceeded", err)
	}

	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := p.DialContext(canceled, "tcp", "8.8.8.8:80"); !errors.Is(err, context.Canceled) {
		t.Errorf("DialContext with a canceled context = %v, want context.Canceled", err)
	}
	if got := d.dialed(); len(got) != 0 {
		t.Errorf("dialled %q, want nothing", got)
	}
}

// TestDialContextLoopbackListener dials a real listener on 127.0.0.1, which is the only
// address these tests ever connect to.
func TestDialContextLoopbackListener(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "target")
	}))
	t.Cleanup(target.Close)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("other server got a request for %s, want none", r.URL)
	}))
	t.Cleanup(other.Close)
	targetAddr := target.Listener.Addr().String()
	_, targetPort, _ := net.SplitHostPort(targetAddr)
	ctx := context.Background()

	t.Run("denied by default", func(t *testing.T) {
		p := mustNew(t, Config{})
		conn, err := p.DialContext(ctx, "tcp", targetAddr)
		var de *DestinationError
		if !errors.As(err, &de) {
			if conn != nil {
				conn.Close()
			}
			t.Fatalf("DialContext(%s) = %v, want *DestinationError", targetAddr, err)
		}
		if de.Host != "127.0.0.1" || !strings.Contains(de.Reason, "loopback") {
			t.Errorf("DestinationError = %+v, want Host 127.0.0.1 and a loopback reason", de)
		}
	})

	t.Run("allowed with exact ip:port", func(t *testing.T) {
		p := mustNew(t, Config{Allow: []string{targetAddr}})
		conn, err := p.DialContext(ctx, "tcp", targetAddr)
		if err != nil {
			t.Fatalf("DialContext(%s) = %v, want a connection", targetAddr, err)
		}
		if got := conn.RemoteAddr().String(); got != targetAddr {
			t.Errorf("connected to %s, want %s", got, targetAddr)
		}
		conn.Close()

		if c, err := p.DialContext(ctx, "tcp", other.Listener.Addr().String()); err == nil {
			c.Close()
			t.Errorf("DialContext(other port) connected, want *DestinationError")
		} else if outcomeOf(t, err) != blocked {
			t.Errorf("DialContext(other port) = %v, want *DestinationError", err)
		}

		client := &http.Client{Transport: p.Transport(nil), CheckRedirect: p.CheckRedirect, Timeout: 5 * time.Second}
		t.Cleanup(client.CloseIdleConnections)
		body := get(t, client, target.URL+"/")
		if body != "target" {
			t.Errorf("GET %s body = %q, want %q", target.URL, body, "target")
		}
	})

	t.Run("allowed by host name entry", func(t *testing.T) {
		res := &fakeResolver{hosts: testHosts}
		p := mustNew(t, Config{Allow: []string{"target.local:" + targetPort}}, WithResolver(res))
		client := &http.Client{Transport: p.Transport(nil), CheckRedirect: p.CheckRedirect, Timeout: 5 * time.Second}
		t.Cleanup(client.CloseIdleConnections)
		if body := get(t, client, "http://target.local:"+targetPort+"/"); body != "target" {
			t.Errorf("GET via target.local body = %q, want %q", body, "target")
		}
		if _, err := client.Get("http://alias.test:" + targetPort + "/"); outcomeOf(t, err) != blocked {
			t.Errorf("GET via alias.test (same address, name not allowed) = %v, want *DestinationError", err)
		}
	})

	t.Run("user dialer control still runs", func(t *testing.T) {
		var mu sync.Mutex
		var seen []string
		d := &net.Dialer{Timeout: 5 * time.Second}
		d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
			mu.Lock()
			seen = append(seen, address)
			mu.Unlock()
			return nil
		}
		p := mustNew(t, Config{Allow: []string{"127.0.0.1:" + targetPort}}, WithDialer(d))
		conn, err := p.DialContext(ctx, "tcp", "127.0.0.1:"+targetPort)
		if err != nil {
			t.Fatalf("DialContext = %v, want a connection", err)
		}
		conn.Close()
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"127.0.0.1:" + targetPort}; !slices.Equal(seen, want) {
			t.Errorf("user ControlContext saw %q, want %q", seen, want)
		}
	})
}

// get fetches url with client and returns the body, failing the test on any error.
func get(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return string(b)
}
