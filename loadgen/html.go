package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Colours of the report's series.
const (
	colPipeline = "#2563eb"
	colBaseline = "#9ca3af"
	colError    = "#dc2626"
	colFetch    = "#16a34a"
	colP99      = "#ea580c"
	colMean     = "#7c3aed"
)

// WriteHTML writes a self-contained HTML page for one run: headline
// numbers, a latency CDF, a percentile spectrum, a latency histogram,
// throughput over time and the phase breakdown. It needs no network access
// to display. Plots that need histograms are left out for a report that was
// decoded from JSON.
func (r *Report) WriteHTML(w io.Writer) error {
	page := htmlPage{
		Title: fmt.Sprintf("loadgen: %s", r.loadModel()),
		Sub:   fmt.Sprintf("%s · target %s · %s", r.StartedAt.Format(time.RFC1123), r.TargetURL, originList(r.Origins)),
	}
	page.Cards = []card{
		{"throughput", fmtCount(r.ThroughputRPS) + "/s", fmt.Sprintf("%d ok in %s", r.OK, fmtSeconds(r.DurationS))},
		{"p50 latency", fmtMs(r.LatencyMS.P50) + " ms", "end to end, client side"},
		{"p99 latency", fmtMs(r.LatencyMS.P99) + " ms", "p99.9 " + fmtMs(r.LatencyMS.P999) + " ms, max " + fmtMs(r.LatencyMS.Max) + " ms"},
		{"errors", fmt.Sprint(r.Errors), errorList(r.ErrorsByCode)},
	}
	if r.AddedLatencyMS != nil {
		page.Cards = append(page.Cards, card{"added by pipeline", fmtMs(r.AddedLatencyMS.P50) + " ms",
			"p50 over a direct fetch; p99 " + fmtMs(r.AddedLatencyMS.P99) + " ms"})
	}
	if r.stats != nil && r.latency.Count() > 0 {
		page.Charts = append(page.Charts,
			namedChart{"Latency CDF", "Share of fetches completed within a latency (end to end, client side).", template.HTML(r.cdfChart())},
			namedChart{"Percentile spectrum", "Latency at each percentile, tail stretched out (HdrHistogram style).", template.HTML(r.spectrumChart())},
			namedChart{"Latency histogram", "Number of fetches per latency bin.", template.HTML(r.histogramChart())},
		)
	}
	if len(r.Timeline) > 0 || len(r.fine) > 0 {
		page.Charts = append(page.Charts, namedChart{"Throughput over time",
			"Fetches completed per second (bars) and their mean latency (line). The last step is usually partial: the run drains.",
			template.HTML(r.timelineChart())})
	}
	page.Tables = append(page.Tables, template.HTML(r.latencyTable()))
	page.Tables = append(page.Tables, template.HTML(r.phaseBars()))
	return page.write(w, r)
}

// WriteHTML writes a self-contained HTML page for a sweep: the table,
// throughput, latency and time per fetch against concurrency, and one CDF
// per level.
func (s *SweepReport) WriteHTML(w io.Writer) error {
	page := htmlPage{Title: "loadgen sweep"}
	if len(s.Runs) > 0 {
		r0 := s.Runs[0]
		page.Sub = fmt.Sprintf("%s · target %s · %s", r0.StartedAt.Format(time.RFC1123), r0.TargetURL, originList(r0.Origins))
		page.Charts = append(page.Charts,
			namedChart{"Throughput by concurrency", "Successful fetches per second at each level.", template.HTML(s.levelChart("throughput (fetches/s)", func(r *Report) []float64 { return []float64{r.ThroughputRPS} }, []string{"throughput"}))},
			namedChart{"Latency by concurrency", "End-to-end p50 and p99.", template.HTML(s.levelChart("latency (ms)", func(r *Report) []float64 { return []float64{r.LatencyMS.P50, r.LatencyMS.P99} }, []string{"p50", "p99"}))},
			namedChart{"% of linear time", "Time per fetch relative to the first level: lower means concurrency pays off.", template.HTML(s.levelChart("% of linear", func(r *Report) []float64 { return []float64{r.PctOfLinear} }, []string{"% of linear"}))},
		)
		if cdf := s.cdfChart(); cdf != "" {
			page.Charts = append(page.Charts, namedChart{"Latency CDF per level", "", template.HTML(cdf)})
		}
	}
	page.Tables = append(page.Tables, template.HTML(s.table()))
	return page.write(w, s)
}

type card struct{ Label, Value, Note string }

type namedChart struct {
	Title, Note string
	SVG         template.HTML
}

type htmlPage struct {
	Title, Sub string
	Cards      []card
	Charts     []namedChart
	Tables     []template.HTML
	JSON       string
}

func (p *htmlPage) write(w io.Writer, data any) error {
	var js bytes.Buffer
	enc := json.NewEncoder(&js)
	enc.SetIndent("", "  ")
	if err := enc.Encode(data); err != nil {
		return fmt.Errorf("loadgen: HTML report: %w", err)
	}
	p.JSON = js.String()
	if err := pageTemplate.Execute(w, p); err != nil {
		return fmt.Errorf("loadgen: HTML report: %w", err)
	}
	return nil
}

func originList(os []OriginInfo) string {
	var parts []string
	for _, o := range os {
		parts = append(parts, o.URL)
	}
	return strings.Join(parts, ", ")
}

func errorList(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// cdfPoints turns a histogram's distribution into (ms, percent) points
// starting at 0%.
func cdfPoints(h *Histogram) [][2]float64 {
	d := h.Distribution()
	if len(d) == 0 {
		return nil
	}
	pts := make([][2]float64, 0, len(d)+1)
	pts = append(pts, [2]float64{d[0][0], 0})
	for _, p := range d {
		pts = append(pts, [2]float64{p[0], 100 * p[1]})
	}
	return pts
}

func percentAxis(label string) axis {
	return axis{lo: 0, hi: 100, label: label, format: func(v float64) string { return fmtTick(v) + "%" }}
}

func (r *Report) cdfChart() string {
	lo, hi := r.latency.Quantile(0), r.LatencyMS.Max
	if r.baseline != nil && r.baseline.Count() > 0 {
		lo = math.Min(lo, r.baseline.Quantile(0))
		hi = math.Max(hi, r.baseline.Quantile(100))
	}
	c := newChart(latencyAxis(lo, hi, "latency (ms)"), percentAxis("fetches completed"))
	c.axes()
	c.polyline(cdfPoints(r.latency), colPipeline, "pipeline", true, false)
	if r.baseline != nil && r.baseline.Count() > 0 {
		c.polyline(cdfPoints(r.baseline), colBaseline, "direct fetch (baseline)", true, false)
	}
	c.vline(r.LatencyMS.P50, colPipeline, "p50 "+fmtMs(r.LatencyMS.P50))
	c.vline(r.LatencyMS.P99, colP99, "p99 "+fmtMs(r.LatencyMS.P99))
	return c.svg()
}

// spectrumChart plots latency against percentile on the 1/(1-q) scale.
func (r *Report) spectrumChart() string {
	n := r.latency.Count()
	maxX := math.Pow(10, math.Max(1, math.Floor(math.Log10(float64(n))))) // resolvable tail
	maxX = math.Min(maxX, 1e6)
	series := []struct {
		name, color string
		h           *Histogram
	}{
		{"pipeline end to end", colPipeline, r.latency},
		{"origin fetch phase", colFetch, r.stats.fetch},
		{"direct fetch (baseline)", colBaseline, r.baseline},
	}
	hi := 0.0
	for _, s := range series {
		if s.h != nil && s.h.Count() > 0 {
			hi = math.Max(hi, s.h.Quantile(100))
		}
	}
	// Label only the 0, 90, 99, 99.9 … ticks.
	x := axis{lo: 1, hi: maxX, log: true, label: "percentile"}
	x.format = func(v float64) string {
		e := math.Round(math.Log10(v))
		if math.Abs(math.Log10(v)-e) > 1e-6 {
			return ""
		}
		if e == 0 {
			return "0%"
		}
		return fmt.Sprintf("%.*f%%", int(max(e-2, 0)), 100*(1-math.Pow(10, -e)))
	}
	c := newChart(x, axis{lo: 0, hi: niceMax(hi), label: "latency (ms)", format: fmtTick})
	c.axes()
	for _, s := range series {
		if s.h == nil || s.h.Count() == 0 {
			continue
		}
		var pts [][2]float64
		for lx := 0.0; lx <= math.Log10(maxX)+1e-9; lx += 0.025 {
			v := math.Pow(10, lx)
			q := 100 * (1 - 1/v)
			pts = append(pts, [2]float64{v, s.h.Quantile(q)})
		}
		c.polyline(pts, s.color, s.name, false, false)
	}
	return c.svg()
}

// histogramChart bins the end-to-end latencies into about 60 bins.
func (r *Report) histogramChart() string {
	d := r.latency.Distribution()
	total := float64(r.latency.Count())
	lo, hi := r.latency.Quantile(0), r.latency.Quantile(99.9)
	if hi <= lo {
		hi = lo + 0.001
	}
	x := latencyAxis(lo, hi, "latency (ms), up to p99.9")
	const nbins = 60
	counts := make([]float64, nbins)
	edge := func(i int) float64 { // bin i spans edge(i)..edge(i+1)
		f := float64(i) / nbins
		if x.log {
			return math.Pow(10, math.Log10(x.lo)+f*(math.Log10(x.hi)-math.Log10(x.lo)))
		}
		return x.lo + f*(x.hi-x.lo)
	}
	prev := 0.0
	for _, p := range d {
		cnt := (p[1] - prev) * total
		prev = p[1]
		if p[0] > x.hi {
			continue
		}
		i := int(clamp01(x.norm(p[0])) * nbins)
		counts[min(i, nbins-1)] += cnt
	}
	c := newChart(x, axis{lo: 0, hi: niceMax(slices.Max(counts)), label: "fetches", format: fmtTick})
	c.axes()
	for i, n := range counts {
		if n < 0.5 {
			continue
		}
		c.bar(edge(i), edge(i+1), n, colPipeline, fmt.Sprintf("%s–%s ms: %.0f fetches", fmtMs(edge(i)), fmtMs(edge(i+1)), n))
	}
	c.vline(r.LatencyMS.P50, colPipeline, "p50")
	c.vline(r.LatencyMS.P99, colP99, "p99")
	return c.svg()
}

// timelineChart shows completions per second and mean latency over time,
// in steps of a tenth of a second for short runs.
func (r *Report) timelineChart() string {
	pts, step := r.Timeline, 1.0
	if len(r.fine) > 0 && len(r.fine) <= 300 {
		pts, step = r.fine, timelineTick.Seconds()
	}
	maxRate, maxLat := 0.0, 0.0
	for _, t := range pts {
		maxRate = math.Max(maxRate, float64(t.OK+t.Errors)/step)
		maxLat = math.Max(maxLat, t.MeanMS)
	}
	c := newChart(axis{lo: 0, hi: float64(len(pts)) * step, label: "seconds since start", format: fmtTick},
		axis{lo: 0, hi: niceMax(maxRate), label: "fetches per second", format: fmtTick})
	y2 := axis{lo: 0, hi: niceMax(maxLat), label: "mean latency (ms)", format: fmtTick}
	c.y2 = &y2
	c.right = 64
	c.axes()
	var line [][2]float64
	for i, t := range pts {
		x0, x1 := float64(i)*step, float64(i+1)*step
		tip := fmt.Sprintf("%s–%s s: %s ok/s, %s errors/s, mean %s ms, max %s ms", fmtTick(x0), fmtTick(x1),
			fmtCount(float64(t.OK)/step), fmtCount(float64(t.Errors)/step), fmtMs(t.MeanMS), fmtMs(t.MaxMS))
		if t.Errors > 0 {
			c.bar(x0, x1, float64(t.OK+t.Errors)/step, colError, tip)
		}
		c.bar(x0, x1, float64(t.OK)/step, colPipeline, tip)
		if t.OK > 0 {
			line = append(line, [2]float64{x0 + step/2, t.MeanMS})
		}
	}
	c.legend = append(c.legend, legendItem{"ok/s", colPipeline})
	if maxErr := slices.MaxFunc(pts, func(a, b TimelinePoint) int { return int(a.Errors - b.Errors) }); maxErr.Errors > 0 {
		c.legend = append(c.legend, legendItem{"errors/s", colError})
	}
	c.polyline(line, colMean, "mean latency", false, true)
	return c.svg()
}

func (r *Report) latencyTable() string {
	var b strings.Builder
	b.WriteString(`<h2>Latency (ms)</h2><table><tr><th></th><th>p50</th><th>p95</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>`)
	for _, row := range r.latencyRows() {
		s := row.s
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
			esc(row.name), fmtMs(s.P50), fmtMs(s.P95), fmtMs(s.P99), fmtMs(s.P999), fmtMs(s.Max), fmtMs(s.Mean))
	}
	b.WriteString("</table>")
	fmt.Fprintf(&b, `<p class="note">%d requests: %d ok, %d errors (%s); statuses: %s; %d warm-up fetches not counted.</p>`,
		r.Requests, r.OK, r.Errors, esc(errorList(r.ErrorsByCode)), esc(errorList(r.StatusCounts)), r.WarmupRequests)
	return b.String()
}

// phaseBars shows where the time of a typical (p50) and a slow (p99) fetch
// goes, as proportional bars.
func (r *Report) phaseBars() string {
	type ph struct {
		name  string
		s     LatencySummary
		color string
	}
	phases := []ph{
		{"enqueue (client)", r.Phases.Enqueue, "#60a5fa"},
		{"origin: queue", r.Phases.Queue, "#f59e0b"},
		{"origin: fetch", r.Phases.Fetch, colFetch},
		{"execution (client)", r.Phases.Execution, "#a78bfa"},
		{"end to end", r.LatencyMS, colPipeline},
	}
	scale := math.Max(r.LatencyMS.P99, 1e-3)
	var b strings.Builder
	b.WriteString(`<h2>Phases</h2><table class="bars"><tr><th></th><th>p50</th><th>p99</th></tr>`)
	for _, p := range phases {
		fmt.Fprintf(&b, `<tr><td>%s</td>`, esc(p.name))
		for _, v := range []float64{p.s.P50, p.s.P99} {
			fmt.Fprintf(&b, `<td><div class="bar" style="width:%.1f%%;background:%s"></div><span>%s ms</span></td>`,
				100*clamp01(v/scale), p.color, fmtMs(v))
		}
		b.WriteString("</tr>")
	}
	b.WriteString(`</table><p class="note">Client enqueue: start-fetch sent → enqueued received. Client execution: enqueued → result received. Queue and fetch are the origin's own timing fields. Bars are scaled to the end-to-end p99.</p>`)
	return b.String()
}

// levelChart plots one or more values per run against concurrency.
func (s *SweepReport) levelChart(ylabel string, vals func(*Report) []float64, names []string) string {
	lo, hi := math.Inf(1), 0.0
	ymax := 0.0
	for _, r := range s.Runs {
		lo = math.Min(lo, float64(r.Concurrency))
		hi = math.Max(hi, float64(r.Concurrency))
		for _, v := range vals(r) {
			ymax = math.Max(ymax, v)
		}
	}
	x := axis{lo: lo, hi: hi, label: "concurrency", format: fmtTick}
	if hi/lo >= 10 {
		x.log = true
		x.lo, x.hi = math.Pow(10, math.Floor(math.Log10(lo))), math.Pow(10, math.Ceil(math.Log10(hi)))
	} else if hi == lo {
		x.lo, x.hi = lo*0.5, hi*1.5
	}
	c := newChart(x, axis{lo: 0, hi: niceMax(ymax), label: ylabel, format: fmtTick})
	c.axes()
	colors := []string{colPipeline, colP99, colFetch}
	for k, name := range names {
		var pts [][2]float64
		var tips []string
		for _, r := range s.Runs {
			v := vals(r)[k]
			pts = append(pts, [2]float64{float64(r.Concurrency), v})
			tips = append(tips, fmt.Sprintf("concurrency %d: %s %s", r.Concurrency, name, fmtMs(v)))
		}
		col := colors[k%len(colors)]
		c.polyline(pts, col, name, false, false)
		c.points(pts, col, tips, false)
	}
	return c.svg()
}

func (s *SweepReport) cdfChart() string {
	lo, hi := math.Inf(1), 0.0
	for _, r := range s.Runs {
		if r.latency == nil || r.latency.Count() == 0 {
			continue
		}
		lo = math.Min(lo, r.latency.Quantile(0))
		hi = math.Max(hi, r.LatencyMS.Max)
	}
	if hi == 0 {
		return ""
	}
	c := newChart(latencyAxis(lo, hi, "latency (ms)"), percentAxis("fetches completed"))
	c.axes()
	palette := []string{"#2563eb", "#16a34a", "#ea580c", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#9333ea"}
	for i, r := range s.Runs {
		if r.latency == nil || r.latency.Count() == 0 {
			continue
		}
		c.polyline(cdfPoints(r.latency), palette[i%len(palette)], fmt.Sprintf("c=%d", r.Concurrency), true, false)
	}
	return c.svg()
}

func (s *SweepReport) table() string {
	var b strings.Builder
	b.WriteString(`<h2>Levels</h2><table><tr><th>concurrency</th><th>requests</th><th>total time</th><th>time/fetch ms</th><th>throughput/s</th><th>p50 ms</th><th>p99 ms</th><th>% of linear</th><th>errors</th><th>added p50</th></tr>`)
	for _, r := range s.Runs {
		added := "–"
		if r.AddedLatencyMS != nil {
			added = fmtMs(r.AddedLatencyMS.P50)
		}
		fmt.Fprintf(&b, "<tr><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%.0f%%</td><td>%d</td><td>%s</td></tr>",
			r.Concurrency, r.Requests, fmtSeconds(r.DurationS), fmtMs(r.TimePerFetchMS), fmtCount(r.ThroughputRPS),
			fmtMs(r.LatencyMS.P50), fmtMs(r.LatencyMS.P99), r.PctOfLinear, r.Errors, added)
	}
	b.WriteString(`</table><p class="note">% of linear: time per fetch relative to the first level, as in the original proxy-fetch measurements (100% = concurrency bought nothing).</p>`)
	return b.String()
}

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#111827;background:#f9fafb;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.sub{color:#6b7280;margin-bottom:18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;min-width:170px;flex:1}
.card .l{color:#6b7280;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:26px;font-weight:600}.card .n{color:#6b7280;font-size:12px}
.chart{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 16px;margin-top:16px}
.chart p{color:#6b7280;margin:0 0 6px}
svg{width:100%;height:auto;display:block}
svg .grid{stroke:#eef0f3}svg .axisline{stroke:#9ca3af}
svg text{font:11px system-ui,sans-serif;fill:#4b5563}svg .axis{font-size:12px;fill:#111827}
svg .legend{font-size:12px;fill:#111827}svg .mark{font-size:11px}
table{border-collapse:collapse;background:#fff;border:1px solid #e5e7eb}
th,td{padding:4px 10px;text-align:right;border-bottom:1px solid #f0f1f3;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}
table.bars td{min-width:260px}table.bars td:first-child{min-width:0}
.bar{display:inline-block;height:10px;border-radius:2px;vertical-align:middle;margin-right:6px}
.note{color:#6b7280;font-size:12px}
details{margin-top:24px}pre{background:#fff;border:1px solid #e5e7eb;padding:12px;overflow:auto;font-size:12px}
</style></head><body><main>
<h1>{{.Title}}</h1><div class="sub">{{.Sub}}</div>
<div class="cards">{{range .Cards}}<div class="card"><div class="l">{{.Label}}</div><div class="v">{{.Value}}</div><div class="n">{{.Note}}</div></div>{{end}}</div>
{{range .Charts}}<div class="chart"><h2>{{.Title}}</h2>{{if .Note}}<p>{{.Note}}</p>{{end}}{{.SVG}}</div>
{{end}}{{range .Tables}}{{.}}
{{end}}<details><summary>Raw JSON</summary><pre>{{.JSON}}</pre></details>
</main></body></html>
`))
