// Package dashboard serves the origin's live dashboard: a self-contained
// HTML page (inline CSS and JavaScript, no CDN, works offline) at "/" that
// polls a JSON endpoint, "/api/stats", every second and shows connections,
// jobs/s, p50/p99 per phase, executors seen, queue depth and errors by code.
//
// The numbers come from the process's Prometheus registry (package
// metrics), so the dashboard and /metrics never disagree. Rates and
// percentiles are computed from the difference between the current reading
// and one taken a few seconds earlier: the dashboard keeps the readings of
// the last minute, taking at most four per second however many pages poll
// it, and it runs no goroutine of its own.
package dashboard

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/executor"
)

// topHosts is how many destination hosts the dashboard lists.
const topHosts = 10

//go:embed page.html
var page []byte

// Config configures a Dashboard. Zero values take the defaults named on
// each field.
type Config struct {
	// Gatherer is where the metrics are read. Required.
	Gatherer prometheus.Gatherer
	// Title names what is shown, e.g. "origin o1". Default "pipeline".
	Title string
	// Started is when the metrics started counting (uptime, and the
	// baseline of the first reading). Default: when New was called.
	Started time.Time
	// RateWindow is the window of the rates (jobs/s). Default 5 s.
	RateWindow time.Duration
	// LatencyWindow is the window of the percentiles. Default 30 s.
	LatencyWindow time.Duration
	// MinInterval is the least time between two readings; polls in between
	// share the last one. Default 250 ms.
	MinInterval time.Duration
	// Hosts, when set, returns up to n destination hosts with the most
	// politeness events (executor.Metrics.TopHosts): hosts are never
	// metric labels, so they come from the executors' in-memory counters.
	// Default: none shown.
	Hosts func(n int) []executor.HostStats

	// now replaces time.Now (tests).
	now func() time.Time
}

// Dashboard serves the page and the stats. It is safe for concurrent use.
type Dashboard struct {
	cfg Config

	mu    sync.Mutex
	snaps []*snapshot // oldest first; the last is the current reading
}

// New returns a dashboard for cfg. It fails without a Gatherer.
func New(cfg Config) (*Dashboard, error) {
	if cfg.Gatherer == nil {
		return nil, errors.New("dashboard: no metrics gatherer")
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.Title == "" {
		cfg.Title = "pipeline"
	}
	if cfg.Started.IsZero() {
		cfg.Started = cfg.now()
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = 5 * time.Second
	}
	if cfg.LatencyWindow <= 0 {
		cfg.LatencyWindow = 30 * time.Second
	}
	if cfg.MinInterval <= 0 {
		cfg.MinInterval = 250 * time.Millisecond
	}
	return &Dashboard{cfg: cfg}, nil
}

// Handlers returns the dashboard's routes by ServeMux pattern: the page at
// exactly "/" and the stats at "/api/stats".
func (d *Dashboard) Handlers() map[string]http.Handler {
	return map[string]http.Handler{
		"/{$}":       http.HandlerFunc(d.servePage),
		"/api/stats": http.HandlerFunc(d.serveStats),
	}
}

func (d *Dashboard) servePage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	_, _ = w.Write(page)
}

func (d *Dashboard) serveStats(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	st, err := d.Stats()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(st)
}

// Stats reads the metrics (unless the last reading is younger than
// MinInterval) and returns the current numbers. It fails when the metrics
// cannot be gathered at all; a collector that fails alone is left out.
func (d *Dashboard) Stats() (Stats, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := d.cfg.now()
	if n := len(d.snaps); n == 0 || now.Sub(d.snaps[n-1].at) >= d.cfg.MinInterval {
		mfs, err := d.cfg.Gatherer.Gather()
		if len(mfs) == 0 && err != nil {
			return Stats{}, fmt.Errorf("dashboard: gather metrics: %w", err)
		}
		d.snaps = append(d.snaps, snapshotOf(now, mfs))
		d.prune(now)
	}
	cur := d.snaps[len(d.snaps)-1]
	st := statsOf(d.cfg.Title, d.cfg.Started, cur, d.base(now, d.cfg.RateWindow), d.base(now, d.cfg.LatencyWindow))
	if d.cfg.Hosts != nil {
		st.TopHosts = d.cfg.Hosts(topHosts)
	}
	return st, nil
}

// base is the reading a window of length w starts from: the oldest one
// taken within w, else the newest older one, else (only the current
// reading exists) an empty reading at Started.
func (d *Dashboard) base(now time.Time, w time.Duration) *snapshot {
	prior := d.snaps[:len(d.snaps)-1]
	for _, s := range prior {
		if now.Sub(s.at) <= w {
			return s
		}
	}
	if len(prior) > 0 {
		return prior[len(prior)-1]
	}
	return &snapshot{at: d.cfg.Started}
}

// prune drops readings no window needs any more, keeping the newest one
// older than the longest window.
func (d *Dashboard) prune(now time.Time) {
	keep := max(d.cfg.RateWindow, d.cfg.LatencyWindow)
	i := 0
	for i+1 < len(d.snaps) && now.Sub(d.snaps[i+1].at) > keep {
		i++
	}
	if i > 0 {
		d.snaps = append(d.snaps[:0], d.snaps[i:]...)
	}
}
