// Package target is the bundled HTTP test target (PROTOCOL.md §4): a small,
// fast server the pipeline and loadgen fetch from, with endpoints that delay,
// return N bytes, return a chosen status, echo the request, redirect, and
// drip a body slowly.
package target

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/httpserve"
)

// Limits on what a request may ask for.
const (
	maxDelay = 60 * time.Second
	maxBytes = 16 << 20
)

// Config is the `target` section of the configuration file.
type Config struct {
	// Enabled makes `pipeline up` run the target (and allow it in the
	// executors' destination policy). Default true.
	Enabled bool `yaml:"enabled"`
	// Listen is the listen address (port 0 picks a free one). Default
	// 127.0.0.1:8090.
	Listen string `yaml:"listen"`
}

// DefaultConfig returns the target settings with every default filled in.
func DefaultConfig() Config { return Config{Enabled: true, Listen: "127.0.0.1:8090"} }

// Server is the test target. Create it with New, run it with Start, stop it
// with Shutdown (the methods of the embedded httpserve.Server).
type Server struct {
	*httpserve.Server
	log zerolog.Logger
}

// Handler returns the target's routes. Each call has its own state (the
// counters of /limited and /flaky).
func Handler() http.Handler {
	mux := http.NewServeMux()
	pol := newPoliteness()
	mux.HandleFunc("/limited", pol.limited)
	mux.HandleFunc("/flaky", pol.flaky)
	mux.HandleFunc("/echo", echo)
	mux.HandleFunc("/delay", delay)
	mux.HandleFunc("/bytes", byteCount)
	mux.HandleFunc("/status", status)
	mux.HandleFunc("/redirect", redirect)
	mux.HandleFunc("/drip", drip)
	cnt := newCounter()
	mux.HandleFunc("/count", cnt.count)
	mux.HandleFunc("/seen", cnt.seen)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "pipeline test target: /echo /delay?ms=N /bytes?n=N /status?code=N /redirect?to=URL /drip?n=N&ms=M /limited?rate=N /flaky?key=K&fail=N\n")
	})
	return mux
}

// New returns a target that will serve on cfg.Listen (default
// 127.0.0.1:8090) once started.
func New(cfg Config, log zerolog.Logger) *Server {
	if cfg.Listen == "" {
		cfg.Listen = DefaultConfig().Listen
	}
	log = log.With().Str("component", "target").Logger()
	srv := &http.Server{Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
	return &Server{Server: httpserve.New("target", cfg.Listen, srv, log), log: log}
}

// Start binds the listen address and serves in the background until
// Shutdown. It fails if the address cannot be bound.
func (s *Server) Start(ctx context.Context) error {
	if err := s.Server.Start(ctx); err != nil {
		return err
	}
	s.log.Info().Str("listen", s.URL()).Msg("test target listening")
	return nil
}

func intParam(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s must be an integer in %d..%d", name, lo, hi)
	}
	return n, nil
}

func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	hdr := make(map[string]string, len(r.Header))
	for k, v := range r.Header {
		if len(v) > 0 {
			hdr[k] = v[0]
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery,
		"headers": hdr, "body": string(body),
	})
}

func delay(w http.ResponseWriter, r *http.Request) {
	ms, err := intParam(r, "ms", 0, 0, int(maxDelay/time.Millisecond))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ms > 0 {
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "delayed %d ms\n", ms)
}

func byteCount(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "n", 0, 0, maxBytes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	binary := r.URL.Query().Get("binary") == "1"
	buf := make([]byte, n)
	for i := range buf {
		if binary {
			buf[i] = byte(i*7 + 0x80)
		} else {
			buf[i] = 'a' + byte(i%26)
		}
	}
	if binary {
		w.Header().Set("Content-Type", "application/octet-stream")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.Header().Set("Content-Length", strconv.Itoa(n))
	_, _ = w.Write(buf)
}

func status(w http.ResponseWriter, r *http.Request) {
	code, err := intParam(r, "code", 200, 200, 599)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, "status %d\n", code)
}

func redirect(w http.ResponseWriter, r *http.Request) {
	to := r.URL.Query().Get("to")
	if to == "" {
		http.Error(w, "to is required", http.StatusBadRequest)
		return
	}
	http.Redirect(w, r, to, http.StatusFound)
}

// drip writes n bytes one at a time, ms milliseconds apart: a slow target.
func drip(w http.ResponseWriter, r *http.Request) {
	n, err := intParam(r, "n", 10, 0, 1<<20)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ms, err := intParam(r, "ms", 100, 0, 60_000)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fl, _ := w.(http.Flusher)
	for i := 0; i < n; i++ {
		if _, err := w.Write([]byte{'.'}); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
}
