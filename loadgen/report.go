package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the outcome of one measured run. Its JSON form is the fetch
// object of PROTOCOL.md §5; fields beyond the contract are extensions.
//
// Requests always equals OK + Errors, and Errors the sum of ErrorsByCode.
type Report struct {
	Mode           string  `json:"mode"` // "fetch"
	Concurrency    int     `json:"concurrency"`
	Connections    int     `json:"connections"`
	Rate           float64 `json:"rate,omitempty"`          // asked open-loop rate, per second
	SendRateRPS    float64 `json:"send_rate_rps,omitempty"` // achieved open-loop send rate
	Requests       int64   `json:"requests"`
	OK             int64   `json:"ok"`
	Errors         int64   `json:"errors"`
	DurationS      float64 `json:"duration_s"` // first send → last reply
	ThroughputRPS  float64 `json:"throughput_rps"`
	TimePerFetchMS float64 `json:"time_per_fetch_ms"` // duration / requests
	// ProcessCPUPerFetchUS is the user+system CPU this process used during
	// the measured phase, per fetch, in microseconds (getrusage): loadgen's
	// own cost against an external pipeline, and loadgen plus the whole
	// pipeline with --embedded. Compare designs by it rather than by
	// throughput alone on a shared machine. Zero where it cannot be read.
	ProcessCPUPerFetchUS float64 `json:"process_cpu_us_per_fetch,omitempty"`
	// PidsCPUPerFetchUS is the user+system CPU the processes given with
	// --cpu-pid (e.g. pipeline up) used during the measured phase, per
	// fetch, in microseconds.
	PidsCPUPerFetchUS float64 `json:"pids_cpu_us_per_fetch,omitempty"`
	// PctOfLinear is set in sweeps: time per fetch relative to the first
	// level's, in percent (the "% of linear time" of the original study).
	PctOfLinear float64 `json:"pct_of_linear,omitempty"`

	LatencyMS LatencySummary `json:"latency_ms"`
	Phases    Phases         `json:"phases"`

	ErrorsByCode map[string]int64 `json:"errors_by_code"`
	// ErrorSamples holds one message per error code.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// UnmatchedErrors counts error frames that named no fetch of this run.
	UnmatchedErrors map[string]int64 `json:"unmatched_errors,omitempty"`
	// StatusCounts counts result frames by HTTP status.
	StatusCounts map[string]int64 `json:"status_counts"`

	BaselineLatencyMS *LatencySummary `json:"baseline_latency_ms,omitempty"`
	AddedLatencyMS    *LatencySummary `json:"added_latency_ms,omitempty"`
	Baseline          *BaselineCounts `json:"baseline,omitempty"`

	TargetURL      string          `json:"target_url"`
	Origins        []OriginInfo    `json:"origins"`
	WarmupRequests int64           `json:"warmup_requests"`
	StartedAt      time.Time       `json:"started_at"`
	Timeline       []TimelinePoint `json:"timeline"`

	stats    *stats          // histograms of the run, for plots
	fine     []TimelinePoint // timeline in timelineTick steps, for plots
	latency  *Histogram      // end-to-end (stats.latency)
	baseline *Histogram
}

// Phases are the latency components of successful fetches, in
// milliseconds. Enqueue and Execution are measured by the client
// (start-fetch sent → enqueued received → result received); the others are
// the origin's own `timing` fields of result frames.
type Phases struct {
	Enqueue       LatencySummary `json:"enqueue_ms"`
	Execution     LatencySummary `json:"execution_ms"`
	OriginEnqueue LatencySummary `json:"origin_enqueue_ms"`
	Queue         LatencySummary `json:"queue_ms"`
	Fetch         LatencySummary `json:"fetch_ms"`
	Total         LatencySummary `json:"total_ms"`
}

// BaselineCounts are the counts of a baseline run.
type BaselineCounts struct {
	Requests  int64   `json:"requests"`
	OK        int64   `json:"ok"`
	Errors    int64   `json:"errors"`
	DurationS float64 `json:"duration_s"`
}

// OriginInfo describes one origin of the run.
type OriginInfo struct {
	URL         string `json:"url"`
	OriginID    string `json:"origin_id,omitempty"` // from its hello frame
	Version     string `json:"version,omitempty"`
	Connections int    `json:"connections"`
	Error       string `json:"error,omitempty"` // why no connection opened
}

// TimelinePoint is one second of the measured phase, by completion time.
type TimelinePoint struct {
	Second int     `json:"t_s"`
	OK     int64   `json:"ok"`
	Errors int64   `json:"errors"`
	MeanMS float64 `json:"mean_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// LatencyHistogram returns the end-to-end latency histogram of the run's
// successful fetches (nil for a report decoded from JSON).
func (r *Report) LatencyHistogram() *Histogram { return r.latency }

// report assembles the report of a finished phase.
func (e *engine) report(p *phase) *Report {
	st := p.stats
	r := &Report{
		Mode:           "fetch",
		Concurrency:    e.cfg.Concurrency,
		Connections:    len(e.conns),
		Rate:           e.cfg.Rate,
		Requests:       p.issued.Load(),
		OK:             p.ok.Load(),
		Errors:         p.errs.Load(),
		TargetURL:      e.cfg.TargetURL,
		WarmupRequests: e.warmupIssued,
		StartedAt:      e.base.Add(time.Duration(p.startNs)),
		stats:          st,
		latency:        st.latency,
		LatencyMS:      st.latency.Summary(),
		Phases: Phases{
			Enqueue:       st.enqueue.Summary(),
			Execution:     st.execution.Summary(),
			OriginEnqueue: st.originEnqueue.Summary(),
			Queue:         st.queue.Summary(),
			Fetch:         st.fetch.Summary(),
			Total:         st.total.Summary(),
		},
	}
	d := time.Duration(p.lastDoneNs.Load() - p.startNs)
	r.DurationS = d.Seconds()
	if d > 0 {
		r.ThroughputRPS = float64(r.OK) / d.Seconds()
	}
	if r.Requests > 0 {
		r.TimePerFetchMS = float64(d) / float64(time.Millisecond) / float64(r.Requests)
	}
	if p.open {
		if first, last, n := p.firstSent.Load(), p.lastSent.Load(), r.Requests; n > 1 && last > first {
			r.SendRateRPS = float64(n-1) / time.Duration(last-first).Seconds()
		}
	}

	st.mu.Lock()
	r.ErrorsByCode = maps.Clone(st.errors)
	if len(st.samples) > 0 {
		r.ErrorSamples = maps.Clone(st.samples)
	}
	if len(st.unmatched) > 0 {
		r.UnmatchedErrors = maps.Clone(st.unmatched)
	}
	r.StatusCounts = make(map[string]int64, len(st.status))
	for code, n := range st.status {
		r.StatusCounts[strconv.Itoa(code)] = n
	}
	r.fine = timelinePoints(st.timeline, 1)
	r.Timeline = timelinePoints(st.timeline, int(time.Second/timelineTick))
	st.mu.Unlock()

	perOrigin := map[string]int{}
	for _, c := range e.conns {
		perOrigin[c.url]++
	}
	seen := map[string]bool{}
	for _, o := range e.cfg.Origins {
		if seen[o] {
			continue
		}
		seen[o] = true
		info := OriginInfo{URL: o, Connections: perOrigin[o], Error: e.dialErrs[o]}
		for _, c := range e.conns {
			if c.url == o {
				info.OriginID, info.Version = c.originID, c.version
				break
			}
		}
		r.Origins = append(r.Origins, info)
	}
	return r
}

// timelinePoints merges every n slices into one point. Point i covers
// [i, i+1) × n × timelineTick; its Second field is in those units too.
func timelinePoints(sl []slice, n int) []TimelinePoint {
	out := make([]TimelinePoint, 0, (len(sl)+n-1)/n)
	for i := 0; i < len(sl); i += n {
		var agg slice
		for _, s := range sl[i:min(i+n, len(sl))] {
			agg.ok += s.ok
			agg.errs += s.errs
			agg.latSum += s.latSum
			agg.latMax = max(agg.latMax, s.latMax)
		}
		tp := TimelinePoint{Second: i / n, OK: agg.ok, Errors: agg.errs, MaxMS: nsToMs(agg.latMax)}
		if agg.ok > 0 {
			tp.MeanMS = nsToMs(agg.latSum / agg.ok)
		}
		out = append(out, tp)
	}
	return out
}

func nsToMs(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }

// setBaseline fills the baseline fields from a baseline run.
func (r *Report) setBaseline(b *BaselineResult) {
	bs := b.Latency.Summary()
	r.baseline = b.Latency
	r.BaselineLatencyMS = &bs
	r.Baseline = &BaselineCounts{Requests: b.Requests, OK: b.OK, Errors: b.Errors, DurationS: b.Duration.Seconds()}
	if b.OK == 0 || r.OK == 0 {
		return
	}
	p := r.LatencyMS
	r.AddedLatencyMS = &LatencySummary{
		P50:  p.P50 - bs.P50,
		P95:  p.P95 - bs.P95,
		P99:  p.P99 - bs.P99,
		P999: p.P999 - bs.P999,
		Max:  p.Max - bs.Max,
		Mean: p.Mean - bs.Mean,
	}
}

// WriteJSON writes the report as one indented JSON object (PROTOCOL.md §5).
func (r *Report) WriteJSON(w io.Writer) error {
	return writeJSON(w, r)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("loadgen: write JSON report: %w", err)
	}
	return nil
}

// loadModel describes how the load was applied, for headings.
func (r *Report) loadModel() string {
	if r.Rate > 0 {
		return fmt.Sprintf("open loop at %s/s (at most %d in flight)", fmtCount(r.Rate), r.Concurrency)
	}
	return fmt.Sprintf("closed loop, %d in flight", r.Concurrency)
}

// WriteText writes the human-readable table of the report.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "loadgen fetch: %s over %d connection(s)\n", r.loadModel(), r.Connections)
	fmt.Fprintf(&b, "target   %s\n", r.TargetURL)
	for _, o := range r.Origins {
		switch {
		case o.Error != "":
			fmt.Fprintf(&b, "origin   %s  UNREACHABLE: %s\n", o.URL, o.Error)
		default:
			fmt.Fprintf(&b, "origin   %s  (%s %s, %d conn)\n", o.URL, orDash(o.OriginID), orDash(o.Version), o.Connections)
		}
	}
	fmt.Fprintf(&b, "requests %d  ok %d  errors %d  warm-up %d\n", r.Requests, r.OK, r.Errors, r.WarmupRequests)
	fmt.Fprintf(&b, "duration %s  throughput %s/s  time per fetch %s ms",
		fmtSeconds(r.DurationS), fmtCount(r.ThroughputRPS), fmtMs(r.TimePerFetchMS))
	if r.ProcessCPUPerFetchUS > 0 {
		fmt.Fprintf(&b, "  process CPU %.0f µs/fetch", r.ProcessCPUPerFetchUS)
	}
	if r.PidsCPUPerFetchUS > 0 {
		fmt.Fprintf(&b, "  --cpu-pid CPU %.0f µs/fetch", r.PidsCPUPerFetchUS)
	}
	if r.Rate > 0 {
		fmt.Fprintf(&b, "  send rate %s/s (asked %s/s)", fmtCount(r.SendRateRPS), fmtCount(r.Rate))
	}
	b.WriteString("\n\n")

	fmt.Fprintf(&b, "%-20s%9s%9s%9s%9s%9s%9s\n", "latency (ms)", "p50", "p95", "p99", "p99.9", "max", "mean")
	for _, row := range r.latencyRows() {
		name := row.name
		if row.phase {
			name = " " + name
		}
		s := row.s
		fmt.Fprintf(&b, "%-20s%9s%9s%9s%9s%9s%9s\n", name,
			fmtMs(s.P50), fmtMs(s.P95), fmtMs(s.P99), fmtMs(s.P999), fmtMs(s.Max), fmtMs(s.Mean))
	}

	if len(r.StatusCounts) > 0 {
		b.WriteString("\nstatus  ")
		for i, k := range slices.Sorted(maps.Keys(r.StatusCounts)) {
			if i > 0 {
				b.WriteString("  ")
			}
			fmt.Fprintf(&b, "%s: %d", k, r.StatusCounts[k])
		}
		b.WriteString("\n")
	}
	if len(r.ErrorsByCode) > 0 {
		b.WriteString("errors\n")
		for _, k := range slices.Sorted(maps.Keys(r.ErrorsByCode)) {
			fmt.Fprintf(&b, "  %-20s %d", k, r.ErrorsByCode[k])
			if msg := r.ErrorSamples[k]; msg != "" {
				fmt.Fprintf(&b, "  e.g. %s", truncate([]byte(msg), 100))
			}
			b.WriteString("\n")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(r.UnmatchedErrors)) {
		fmt.Fprintf(&b, "  (error frames without a known id: %s %d)\n", k, r.UnmatchedErrors[k])
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("loadgen: write text report: %w", err)
	}
	return nil
}

// SweepReport is the outcome of RunSweep; its JSON form is
// {"mode":"sweep","runs":[...]} (PROTOCOL.md §5).
type SweepReport struct {
	Mode string    `json:"mode"` // "sweep"
	Runs []*Report `json:"runs"`
}

// WriteJSON writes the sweep as one indented JSON object.
func (s *SweepReport) WriteJSON(w io.Writer) error { return writeJSON(w, s) }

// WriteText writes the sweep table: one row per concurrency level.
func (s *SweepReport) WriteText(w io.Writer) error {
	var b strings.Builder
	if len(s.Runs) > 0 {
		r0 := s.Runs[0]
		fmt.Fprintf(&b, "loadgen sweep: target %s\n", r0.TargetURL)
		for _, o := range r0.Origins {
			fmt.Fprintf(&b, "origin   %s\n", o.URL)
		}
		b.WriteString("\n")
	}
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "concurrency\trequests\ttotal time\ttime/fetch ms\tthroughput/s\tp50 ms\tp99 ms\t% of linear\terrors\t"
	withBaseline := len(s.Runs) > 0 && s.Runs[0].AddedLatencyMS != nil
	if withBaseline {
		hdr += "added p50\tadded p99\t"
	}
	fmt.Fprintln(tw, hdr)
	for _, r := range s.Runs {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t%d\t", r.Concurrency, r.Requests,
			fmtSeconds(r.DurationS), fmtMs(r.TimePerFetchMS), fmtCount(r.ThroughputRPS),
			fmtMs(r.LatencyMS.P50), fmtMs(r.LatencyMS.P99), r.PctOfLinear, r.Errors)
		if withBaseline {
			if a := r.AddedLatencyMS; a != nil {
				fmt.Fprintf(tw, "%s\t%s\t", fmtMs(a.P50), fmtMs(a.P99))
			} else {
				fmt.Fprint(tw, "-\t-\t")
			}
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("loadgen: write sweep table: %w", err)
	}
	b.WriteString("\n% of linear: time per fetch relative to the first level (100% = no gain from concurrency).\n")
	for _, r := range s.Runs {
		if len(r.ErrorsByCode) > 0 {
			fmt.Fprintf(&b, "errors at concurrency %d:", r.Concurrency)
			for _, k := range slices.Sorted(maps.Keys(r.ErrorsByCode)) {
				fmt.Fprintf(&b, " %s=%d", k, r.ErrorsByCode[k])
			}
			b.WriteString("\n")
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("loadgen: write sweep table: %w", err)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// fmtMs formats milliseconds with about three significant digits.
func fmtMs(ms float64) string {
	a := ms
	if a < 0 {
		a = -a
	}
	switch {
	case a == 0:
		return "0"
	case a < 1:
		return strconv.FormatFloat(ms, 'f', 3, 64)
	case a < 100:
		return strconv.FormatFloat(ms, 'f', 2, 64)
	case a < 10000:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	default:
		return strconv.FormatFloat(ms, 'f', 0, 64)
	}
}

func fmtSeconds(s float64) string {
	if s < 1 {
		return fmtMs(s*1000) + " ms"
	}
	return strconv.FormatFloat(s, 'f', 2, 64) + " s"
}

// fmtCount formats a rate or count with thousands separators.
func fmtCount(v float64) string {
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// latencyRow is one line of a report's latency table.
type latencyRow struct {
	name  string
	phase bool // a phase of the end-to-end latency (indented in text)
	s     LatencySummary
}

// latencyRows are the rows the text and HTML reports show, in order.
func (r *Report) latencyRows() []latencyRow {
	rows := []latencyRow{
		{"end to end", false, r.LatencyMS},
		{"enqueue (client)", true, r.Phases.Enqueue},
		{"execution (client)", true, r.Phases.Execution},
		{"origin: enqueue", true, r.Phases.OriginEnqueue},
		{"origin: queue", true, r.Phases.Queue},
		{"origin: fetch", true, r.Phases.Fetch},
		{"origin: total", true, r.Phases.Total},
	}
	if r.BaselineLatencyMS != nil {
		rows = append(rows, latencyRow{"baseline (direct)", false, *r.BaselineLatencyMS})
	}
	if r.AddedLatencyMS != nil {
		rows = append(rows, latencyRow{"added by pipeline", false, *r.AddedLatencyMS})
	}
	return rows
}
