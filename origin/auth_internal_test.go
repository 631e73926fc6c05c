package origin

import (
	"bytes"
	"net"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestCheckOriginAgainstListenAddress(t *testing.T) {
	for _, tc := range []struct {
		listen, origin, host string
		ok                   bool
	}{
		{"127.0.0.1:8080", "http://127.0.0.1:8080", "127.0.0.1:8080", true},
		{"127.0.0.1:8080", "https://127.0.0.1:8080", "", true},
		{"127.0.0.1:8080", "http://127.0.0.1:9090", "", false},
		// DNS rebinding: the attacker's name resolves to us; Host matches Origin.
		{"127.0.0.1:8080", "http://rebind.example:8080", "rebind.example:8080", false},
		{"localhost:8080", "http://localhost:8080", "", true},
		{"app.example:443", "https://app.example", "", true},
		{"app.example:443", "http://app.example", "", false},
		{"[::1]:8080", "http://[::1]:8080", "", true},
		// An unspecified listen host matches no browser page.
		{"0.0.0.0:8080", "http://0.0.0.0:8080", "0.0.0.0:8080", false},
		{":8080", "http://example.com:8080", "example.com:8080", false},
		{"127.0.0.1:8080", "", "", true}, // no Origin: not a browser
	} {
		s := &Server{cfg: Config{Listen: tc.listen}}
		r := httptest.NewRequest("GET", "/ws", nil)
		r.Host = tc.host
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := s.checkOrigin(r); got != tc.ok {
			t.Errorf("listen %s origin %q host %q: got %v, want %v", tc.listen, tc.origin, tc.host, got, tc.ok)
		}
	}
	// Port 0: the bound port counts.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{cfg: Config{Listen: "127.0.0.1:0"}, ln: ln}
	u := &url.URL{Scheme: "http", Host: ln.Addr().String()}
	if !s.isListenOrigin(u) {
		t.Errorf("origin %s on a port-0 listener bound at %s: refused", u, ln.Addr())
	}
}

func TestWSAuthRefusesBeforeUpgradeAndLogsRarely(t *testing.T) {
	var logs bytes.Buffer
	s := &Server{cfg: Config{AuthToken: "s3cret"}, log: zerolog.New(&logs)}
	for _, tc := range []struct {
		name, query, header string
		proceed, inFrame    bool
		status              int
	}{
		{"no token", "", "", false, false, 401},
		{"wrong header", "", "Bearer guess-1", false, false, 401},
		{"wrong header and query", "?access_token=s3cret", "Bearer guess-1", false, false, 401},
		{"wrong query", "?access_token=guess-2", "", true, true, 200},
		{"right header", "", "Bearer s3cret", true, false, 200},
		{"right query", "?access_token=s3cret", "", true, false, 200},
	} {
		r := httptest.NewRequest("GET", "/ws"+tc.query, nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		w := httptest.NewRecorder()
		proceed, inFrame := s.wsAuth(w, r)
		if proceed != tc.proceed || inFrame != tc.inFrame || w.Code != tc.status {
			t.Errorf("%s: proceed %v inFrame %v status %d, want %v %v %d", tc.name, proceed, inFrame, w.Code, tc.proceed, tc.inFrame, tc.status)
		}
	}
	for i := 0; i < 1000; i++ {
		s.wsAuth(httptest.NewRecorder(), httptest.NewRequest("GET", "/ws", nil))
	}
	if n := strings.Count(logs.String(), "\n"); n != 1 {
		t.Errorf("%d log lines for 1004 refusals, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "guess-") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("a token reached the log: %s", logs.String())
	}
}
