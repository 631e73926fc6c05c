package origin

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
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

// TestRefuseInFrameAnswersEveryHandshake: a wrong ?access_token= gets the
// 101 (with RFC 6455's accept key), the unauthorized frame and close 1008
// whichever way the handshake is written (the one-write path takes plain
// ones; the upgrader the rest), and a request that is no valid handshake
// gets the upgrader's HTTP error.
func TestRefuseInFrameAnswersEveryHandshake(t *testing.T) {
	s := &Server{cfg: Config{AuthToken: "s3cret"}, log: zerolog.Nop()}
	s.upgrader = websocket.Upgrader{CheckOrigin: s.checkOrigin}
	ts := httptest.NewServer(http.HandlerFunc(s.refuseInFrame))
	defer ts.Close()
	addr := ts.Listener.Addr().String()
	closing := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "unauthorized")
	for _, version := range []string{"13", "13, 8"} { // "13, 8": through the upgrader
		t.Run(version, func(t *testing.T) {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			req := "GET /ws?access_token=nope HTTP/1.1\r\nHost: " + addr + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Version: " + version + "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
			if _, err := nc.Write([]byte(req)); err != nil {
				t.Fatal(err)
			}
			_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(nc)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
				t.Fatalf("handshake: HTTP %d, accept %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Accept"))
			}
			rest, _ := io.ReadAll(br) // up to the close
			text := rest[2 : 2+int(rest[1])]
			if rest[0] != 0x81 || !bytes.Contains(text, []byte(`"code":"unauthorized"`)) {
				t.Fatalf("first frame %x, want the unauthorized text frame", rest)
			}
			cl := rest[2+len(text):]
			if len(cl) < 2 || cl[0] != 0x88 || !bytes.Equal(cl[2:], closing) {
				t.Fatalf("then %x, want close 1008", cl)
			}
		})
	}
	resp, err := http.Get(ts.URL + "/ws?access_token=nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain GET: HTTP %d, want 400 from the upgrader", resp.StatusCode)
	}
}
