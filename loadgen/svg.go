package loadgen

import (
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
)

// This file draws the SVG charts of the HTML report by hand, so the report
// is one self-contained file that works offline.

// axis maps data values to one dimension of a chart.
type axis struct {
	lo, hi float64
	log    bool
	label  string
	format func(float64) string
}

// norm returns v's position on the axis in [0, 1].
func (a axis) norm(v float64) float64 {
	lo, hi := a.lo, a.hi
	if a.log {
		v, lo, hi = math.Log10(math.Max(v, 1e-9)), math.Log10(lo), math.Log10(hi)
	}
	if hi == lo {
		return 0.5
	}
	return (v - lo) / (hi - lo)
}

// ticks returns about n readable tick values inside the axis range.
func (a axis) ticks(n int) []float64 {
	if a.log {
		var out []float64
		decades := math.Log10(a.hi) - math.Log10(a.lo)
		mults := []float64{1}
		switch {
		case decades <= 1.5:
			mults = []float64{1, 2, 3, 5, 7}
		case decades <= 3:
			mults = []float64{1, 2, 5}
		}
		for e := math.Floor(math.Log10(a.lo)); e <= math.Ceil(math.Log10(a.hi)); e++ {
			for _, m := range mults {
				v := m * math.Pow(10, e)
				if v >= a.lo*0.999 && v <= a.hi*1.001 {
					out = append(out, v)
				}
			}
		}
		return out
	}
	step := niceStep((a.hi - a.lo) / float64(n))
	var out []float64
	for v := math.Ceil(a.lo/step) * step; v <= a.hi+step*1e-9; v += step {
		out = append(out, v)
	}
	return out
}

// niceStep rounds raw up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// niceMax rounds v up to a value that makes a tidy axis end.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	s := niceStep(v / 5)
	return math.Ceil(v/s) * s
}

// latencyAxis picks a linear or log axis covering [lo, hi] milliseconds.
func latencyAxis(lo, hi float64, label string) axis {
	lo, hi = math.Max(lo, 0.001), math.Max(hi, 0.001)
	if hi/lo > 30 {
		return axis{lo: math.Pow(10, math.Floor(math.Log10(lo))), hi: math.Pow(10, math.Ceil(math.Log10(hi))), log: true, label: label, format: fmtTick}
	}
	return axis{lo: 0, hi: niceMax(hi), label: label, format: fmtTick}
}

// fmtTick formats an axis value briefly: 0.05, 2.5, 750, 2000, 15k, 1.2M.
func fmtTick(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 1e6:
		return trimFloat(v/1e6) + "M"
	case a >= 1e4:
		return trimFloat(v/1e3) + "k"
	default:
		return trimFloat(v)
	}
}

// trimFloat prints v with at most three significant decimals and no
// trailing zeros.
func trimFloat(v float64) string {
	s := strconv.FormatFloat(v, 'f', 3, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

// chart is one SVG plot area with axes.
type chart struct {
	w, h                     float64
	left, right, top, bottom float64
	x, y                     axis
	y2                       *axis // optional right-hand axis
	b                        strings.Builder
	legend                   []legendItem
}

type legendItem struct{ name, color string }

func newChart(x, y axis) *chart {
	return &chart{w: 720, h: 320, left: 64, right: 24, top: 30, bottom: 48, x: x, y: y}
}

func (c *chart) px(v float64) float64 { return c.left + c.x.norm(v)*(c.w-c.left-c.right) }
func (c *chart) py(v float64) float64 { return c.h - c.bottom - c.y.norm(v)*(c.h-c.top-c.bottom) }
func (c *chart) py2(v float64) float64 {
	return c.h - c.bottom - c.y2.norm(v)*(c.h-c.top-c.bottom)
}

func clamp01(v float64) float64 { return math.Min(math.Max(v, 0), 1) }

// axes draws the grid, tick labels and axis titles.
func (c *chart) axes() {
	x0, x1 := c.left, c.w-c.right
	y0, y1 := c.h-c.bottom, c.top
	for _, t := range c.y.ticks(5) {
		y := c.py(t)
		fmt.Fprintf(&c.b, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x0, y, x1, y)
		fmt.Fprintf(&c.b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="end">%s</text>`, x0-6, y+4, esc(c.y.format(t)))
	}
	for _, t := range c.x.ticks(8) {
		x := c.px(t)
		fmt.Fprintf(&c.b, `<line class="grid" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x, y0, x, y1)
		fmt.Fprintf(&c.b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, y0+16, esc(c.x.format(t)))
	}
	if c.y2 != nil {
		for _, t := range c.y2.ticks(5) {
			fmt.Fprintf(&c.b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="start">%s</text>`, x1+6, c.py2(t)+4, esc(c.y2.format(t)))
		}
		fmt.Fprintf(&c.b, `<text class="axis" transform="translate(%.1f %.1f) rotate(90)" text-anchor="middle">%s</text>`,
			c.w-18, (y0+y1)/2, esc(c.y2.label))
	}
	fmt.Fprintf(&c.b, `<line class="axisline" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x0, y0, x1, y0)
	fmt.Fprintf(&c.b, `<line class="axisline" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f"/>`, x0, y0, x0, y1)
	fmt.Fprintf(&c.b, `<text class="axis" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, (x0+x1)/2, c.h-8, esc(c.x.label))
	fmt.Fprintf(&c.b, `<text class="axis" transform="translate(14 %.1f) rotate(-90)" text-anchor="middle">%s</text>`, (y0+y1)/2, esc(c.y.label))
}

// polyline draws a series; step draws it as a staircase (for CDFs). Points
// closer than half a pixel to the previous one are dropped.
func (c *chart) polyline(pts [][2]float64, color, name string, step, right bool) {
	if len(pts) == 0 {
		return
	}
	py := c.py
	if right {
		py = c.py2
	}
	var b strings.Builder
	lastX, lastY := math.Inf(-1), math.Inf(-1)
	for i, p := range pts {
		x, y := c.px(p[0]), py(p[1])
		if step && i > 0 {
			fmt.Fprintf(&b, "%.1f,%.1f ", x, lastY)
		}
		if i == len(pts)-1 || math.Abs(x-lastX) >= 0.5 || math.Abs(y-lastY) >= 0.5 {
			fmt.Fprintf(&b, "%.1f,%.1f ", x, y)
			lastX, lastY = x, y
		}
	}
	fmt.Fprintf(&c.b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"><title>%s</title></polyline>`,
		color, strings.TrimSpace(b.String()), esc(name))
	c.legend = append(c.legend, legendItem{name, color})
}

// points marks each point with a dot carrying a tooltip.
func (c *chart) points(pts [][2]float64, color string, tips []string, right bool) {
	py := c.py
	if right {
		py = c.py2
	}
	for i, p := range pts {
		tip := ""
		if i < len(tips) {
			tip = tips[i]
		}
		fmt.Fprintf(&c.b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s</title></circle>`, c.px(p[0]), py(p[1]), color, esc(tip))
	}
}

// bar draws one bar between x values x0 and x1 from 0 (or the axis floor)
// up to y.
func (c *chart) bar(x0, x1, y float64, color, tip string) {
	base := c.h - c.bottom
	top := c.py(y)
	left, right := c.px(x0), c.px(x1)
	if right-left > 2 {
		left, right = left+0.5, right-0.5
	}
	fmt.Fprintf(&c.b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`,
		left, top, math.Max(right-left, 0.5), math.Max(base-top, 0), color, esc(tip))
}

// vline marks a value on the x axis, labelled at the top.
func (c *chart) vline(x float64, color, label string) {
	px := c.px(x)
	fmt.Fprintf(&c.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="4 3"/>`,
		px, c.h-c.bottom, px, c.top, color)
	fmt.Fprintf(&c.b, `<text class="mark" x="%.1f" y="%.1f" fill="%s">%s</text>`, px+3, c.top+12, color, esc(label))
}

// svg returns the finished chart.
func (c *chart) svg() string {
	var out strings.Builder
	fmt.Fprintf(&out, `<svg viewBox="0 0 %.0f %.0f" xmlns="http://www.w3.org/2000/svg" role="img">`, c.w, c.h)
	out.WriteString(c.b.String())
	lx := c.left + 12
	for _, l := range c.legend {
		if l.name == "" {
			continue
		}
		fmt.Fprintf(&out, `<rect x="%.1f" y="%.1f" width="12" height="4" fill="%s"/>`, lx, 9.0, l.color)
		fmt.Fprintf(&out, `<text class="legend" x="%.1f" y="%.1f">%s</text>`, lx+16, 14.0, esc(l.name))
		lx += 28 + 7*float64(len(l.name))
	}
	out.WriteString(`</svg>`)
	return out.String()
}

func esc(s string) string { return html.EscapeString(s) }
