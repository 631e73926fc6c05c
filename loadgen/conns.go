package loadgen

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// ConnsConfig configures an idle-connection run (Conns): how much memory an
// origin spends per open, idle WebSocket connection.
type ConnsConfig struct {
	// Origin is the origin's WebSocket URL. Default DefaultOrigin.
	Origin string
	// Connections is how many idle connections to hold. Default 10,000.
	Connections int
	// MetricsURL is the origin's Prometheus endpoint. Default: /metrics on
	// the origin's host.
	MetricsURL string
	// Token is the origin's bearer token, if it needs one.
	Token string
	// Settle is how long to wait before each reading, so that the origin
	// has finished the work of the last connection. Default 2 s.
	Settle time.Duration
	// DialTimeout bounds one connection's dial and hello. Default 10 s.
	DialTimeout time.Duration
	// Logger receives progress lines. Default: none.
	Logger zerolog.Logger
}

// ProcessMemory is one reading of the origin process's memory from its
// /metrics (the Go and process collectors).
type ProcessMemory struct {
	RSSBytes        float64 `json:"rss_bytes"`
	HeapInuseBytes  float64 `json:"heap_inuse_bytes"`
	StackInuseBytes float64 `json:"stack_inuse_bytes"`
	Goroutines      float64 `json:"goroutines"`
}

// ConnsReport is the result of Conns. Readings are taken before any
// connection, with Connections open (first round), after closing them all,
// and with Connections open again (second round, after that warm-up).
type ConnsReport struct {
	Mode        string        `json:"mode"`
	Connections int           `json:"connections"`
	Before      ProcessMemory `json:"before"`
	FirstRound  ProcessMemory `json:"first_round"`
	Closed      ProcessMemory `json:"closed"`
	SecondRound ProcessMemory `json:"second_round"`
	// Per connection, first round over before: what each new connection
	// costs from a cold start.
	RSSPerConnKB   float64 `json:"rss_per_conn_kb"`
	HeapPerConnKB  float64 `json:"heap_per_conn_kb"`
	StackPerConnKB float64 `json:"stack_per_conn_kb"`
	// Per connection, second round over closed: after a warm-up round. RSS
	// here can hide cost in memory the first round left behind; heap and
	// stacks in use do not.
	SecondRSSPerConnKB       float64 `json:"second_rss_per_conn_kb"`
	SecondHeapStackPerConnKB float64 `json:"second_heap_stack_per_conn_kb"`
}

func (c ConnsConfig) withDefaults() (ConnsConfig, error) {
	if c.Origin == "" {
		c.Origin = DefaultOrigin
	}
	if c.Connections <= 0 {
		c.Connections = 10_000
	}
	if c.Settle <= 0 {
		c.Settle = 2 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.MetricsURL == "" {
		u, err := url.Parse(c.Origin)
		if err != nil {
			return c, fmt.Errorf("origin %q: %w", c.Origin, err)
		}
		scheme := "http"
		if u.Scheme == "wss" {
			scheme = "https"
		}
		c.MetricsURL = scheme + "://" + u.Host + "/metrics"
	}
	return c, nil
}

// Conns opens cfg.Connections idle WebSocket connections to an origin,
// twice, and reads the origin's memory from its /metrics before, during
// and between the rounds. It fails if a connection cannot be opened or the
// metrics cannot be read; every connection it opened is closed when it
// returns. It is meant for loopback runs: the loadgen process needs one file
// descriptor per connection.
func Conns(ctx context.Context, cfg ConnsConfig) (*ConnsReport, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("conns: %w", err)
	}
	rep := &ConnsReport{Mode: "conns", Connections: cfg.Connections}
	read := func(label string) (ProcessMemory, error) {
		select {
		case <-time.After(cfg.Settle):
		case <-ctx.Done():
			return ProcessMemory{}, ctx.Err()
		}
		m, err := readProcessMemory(ctx, cfg.MetricsURL, cfg.Token)
		if err != nil {
			return m, fmt.Errorf("conns: %s: %w", label, err)
		}
		cfg.Logger.Info().Str("at", label).Float64("rss_mb", m.RSSBytes/1e6).Float64("heap_mb", m.HeapInuseBytes/1e6).
			Float64("stacks_mb", m.StackInuseBytes/1e6).Float64("goroutines", m.Goroutines).Msg("origin memory")
		return m, nil
	}
	if rep.Before, err = read("before"); err != nil {
		return nil, err
	}
	conns, err := openIdle(ctx, cfg)
	defer func() { closeAll(conns) }()
	if err != nil {
		return nil, err
	}
	if rep.FirstRound, err = read("first round"); err != nil {
		return nil, err
	}
	closeAll(conns)
	if rep.Closed, err = read("closed"); err != nil {
		return nil, err
	}
	if conns, err = openIdle(ctx, cfg); err != nil {
		return nil, err
	}
	if rep.SecondRound, err = read("second round"); err != nil {
		return nil, err
	}
	n := float64(cfg.Connections) * 1024
	rep.RSSPerConnKB = (rep.FirstRound.RSSBytes - rep.Before.RSSBytes) / n
	rep.HeapPerConnKB = (rep.FirstRound.HeapInuseBytes - rep.Before.HeapInuseBytes) / n
	rep.StackPerConnKB = (rep.FirstRound.StackInuseBytes - rep.Before.StackInuseBytes) / n
	rep.SecondRSSPerConnKB = (rep.SecondRound.RSSBytes - rep.Closed.RSSBytes) / n
	rep.SecondHeapStackPerConnKB = (rep.SecondRound.HeapInuseBytes + rep.SecondRound.StackInuseBytes -
		rep.Before.HeapInuseBytes - rep.Before.StackInuseBytes) / n
	return rep, nil
}

// openIdle opens cfg.Connections connections and waits for each one's
// hello, so that the origin has set each session up.
func openIdle(ctx context.Context, cfg ConnsConfig) ([]*websocket.Conn, error) {
	hdr := http.Header{}
	if cfg.Token != "" {
		hdr.Set("Authorization", "Bearer "+cfg.Token)
	}
	d := websocket.Dialer{HandshakeTimeout: cfg.DialTimeout, ReadBufferSize: 512, WriteBufferSize: 512}
	conns := make([]*websocket.Conn, 0, cfg.Connections)
	for i := 0; i < cfg.Connections; i++ {
		dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		c, _, err := d.DialContext(dctx, cfg.Origin, hdr)
		cancel()
		if err != nil {
			return conns, fmt.Errorf("conns: connection %d: %w", i+1, err)
		}
		conns = append(conns, c)
		_ = c.SetReadDeadline(time.Now().Add(cfg.DialTimeout))
		if _, _, err := c.ReadMessage(); err != nil {
			return conns, fmt.Errorf("conns: connection %d: hello: %w", i+1, err)
		}
		if (i+1)%1000 == 0 {
			cfg.Logger.Debug().Int("open", i+1).Msg("connections")
		}
	}
	return conns, nil
}

func closeAll(conns []*websocket.Conn) {
	for _, c := range conns {
		_ = c.Close()
	}
}

// readProcessMemory reads the process and Go memory gauges from a
// Prometheus text endpoint.
func readProcessMemory(ctx context.Context, metricsURL, token string) (ProcessMemory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return ProcessMemory{}, err
	}
	req.Header.Set("Accept", "text/plain")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ProcessMemory{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ProcessMemory{}, fmt.Errorf("GET %s: %s", metricsURL, resp.Status)
	}
	want := map[string]*float64{}
	var m ProcessMemory
	want["process_resident_memory_bytes"] = &m.RSSBytes
	want["go_memstats_heap_inuse_bytes"] = &m.HeapInuseBytes
	want["go_memstats_stack_inuse_bytes"] = &m.StackInuseBytes
	want["go_goroutines"] = &m.Goroutines
	found := 0
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
			if err != nil {
				return m, fmt.Errorf("%s: %w", name, err)
			}
			*p = v
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("read %s: %w", metricsURL, err)
	}
	if found < len(want) {
		return m, errors.New("the endpoint lacks the process and Go memory metrics (is it a pipeline origin's /metrics?)")
	}
	return m, nil
}
