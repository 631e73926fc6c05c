package netpolicy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// dialLog records every address the HTTP transport asks to dial, before the policy sees it.
type dialLog struct {
	mu    sync.Mutex
	addrs []string
}

func (l *dialLog) wrap(next func(context.Context, string, string) (net.Conn, error)) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		l.mu.Lock()
		l.addrs = append(l.addrs, address)
		l.mu.Unlock()
		return next(ctx, network, address)
	}
}

func (l *dialLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.addrs...)
}

// TestRedirectChain follows redirects from a real server on 127.0.0.1 (allow-listed) and
// checks that hops to denied destinations are refused at the hop, before any dial.
func TestRedirectChain(t *testing.T) {
	var otherHits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherHits.Add(1)
	}))
	t.Cleanup(other.Close)

	var start *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/to-private", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://10.0.0.1/", http.StatusFound)
	})
	mux.HandleFunc("/to-metadata", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/to-hex-loopback", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://0x7f.1:"+strconv.Itoa(other.Listener.Addr().(*net.TCPAddr).Port)+"/", http.StatusFound)
	})
	mux.HandleFunc("/to-other-port", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/to-file", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
	})
	mux.HandleFunc("/to-rebind", func(w http.ResponseWriter, r *http.Request) {
		// A name CheckURL cannot judge: the dial-time check refuses its resolved address.
		http.Redirect(w, r, "http://rebind.test:"+strconv.Itoa(other.Listener.Addr().(*net.TCPAddr).Port)+"/", http.StatusFound)
	})
	mux.HandleFunc("/hop", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if n <= 0 {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, start.URL+"/hop?n="+strconv.Itoa(n-1), http.StatusFound)
	})
	start = httptest.NewServer(mux)
	t.Cleanup(start.Close)
	startAddr := start.Listener.Addr().String()

	newClient := func(t *testing.T, cfg Config) (*http.Client, *dialLog) {
		t.Helper()
		cfg.Allow = append(cfg.Allow, startAddr)
		p := mustNew(t, cfg, WithResolver(&fakeResolver{hosts: testHosts}))
		log := &dialLog{}
		tr := p.Transport(nil)
		tr.DialContext = log.wrap(tr.DialContext)
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, CheckRedirect: p.CheckRedirect, Timeout: 5 * time.Second}, log
	}

	tests := []struct {
		name     string
		cfg      Config
		path     string
		wantCode int           // for a successful fetch
		wantErr  error         // ErrTooManyRedirects, ErrInvalidURL, or errBlocked
		wantDial []string      // addresses the transport asked to dial; nil = only startAddr
		hopCheck func() string // extra assertion; returns a failure message or ""
	}{
		{name: "no redirect", path: "/ok", wantCode: http.StatusOK},
		{name: "to 10.0.0.1", path: "/to-private", wantErr: errBlocked},
		{name: "to metadata", path: "/to-metadata", wantErr: errBlocked},
		{name: "to hex loopback", path: "/to-hex-loopback", wantErr: errBlocked},
		{name: "to 127.0.0.1 other port", path: "/to-other-port", wantErr: errBlocked},
		{name: "to file scheme", path: "/to-file", wantErr: ErrInvalidURL},
		{
			name: "to name resolving to private", path: "/to-rebind", wantErr: errBlocked,
			wantDial: []string{startAddr, "rebind.test:" + strconv.Itoa(other.Listener.Addr().(*net.TCPAddr).Port)},
		},
		{name: "five hops within default cap", path: "/hop?n=5", wantCode: http.StatusOK},
		{name: "six hops over default cap", path: "/hop?n=6", wantErr: ErrTooManyRedirects},
		{name: "cap two, two hops", cfg: Config{MaxRedirects: 2}, path: "/hop?n=2", wantCode: http.StatusOK},
		{name: "cap two, three hops", cfg: Config{MaxRedirects: 2}, path: "/hop?n=3", wantErr: ErrTooManyRedirects},
		{name: "no redirects returns the 3xx", cfg: Config{MaxRedirects: -1}, path: "/to-private", wantCode: http.StatusFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, log := newClient(t, tt.cfg)
			resp, err := client.Get(start.URL + tt.path)
			if resp != nil {
				resp.Body.Close()
			}
			switch {
			case tt.wantErr == nil:
				if err != nil {
					t.Fatalf("GET %s: %v, want status %d", tt.path, err, tt.wantCode)
				}
				if resp.StatusCode != tt.wantCode {
					t.Errorf("GET %s: status %d, want %d", tt.path, resp.StatusCode, tt.wantCode)
				}
			case tt.wantErr == errBlocked:
				var de *DestinationError
				if !errors.As(err, &de) {
					t.Fatalf("GET %s: %v, want *DestinationError", tt.path, err)
				}
				var ue *url.Error
				if !errors.As(err, &ue) {
					t.Errorf("GET %s: %T, want it inside a *url.Error", tt.path, err)
				}
			default:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("GET %s: %v, want %v", tt.path, err, tt.wantErr)
				}
			}
			want := tt.wantDial
			if want == nil {
				want = []string{startAddr}
			}
			got := log.list()
			// Keep-alive may reuse one connection or open several; every dial must be expected.
			for _, a := range got {
				ok := false
				for _, w := range want {
					ok = ok || a == w
				}
				if !ok {
					t.Errorf("GET %s: transport dialled %q (all: %q), want only %q", tt.path, a, got, want)
				}
			}
			if otherHits.Load() != 0 {
				t.Errorf("GET %s: the non-allowed server got %d requests, want 0", tt.path, otherHits.Load())
			}
		})
	}
}
