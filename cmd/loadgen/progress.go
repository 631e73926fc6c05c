package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pipeline-dev/pipeline/loadgen"
)

// progressLine redraws one status line on a terminal while a phase runs and
// erases it when the phase ends, so the table starts on a clean screen.
// It is safe for concurrent use.
type progressLine struct {
	w io.Writer

	mu       sync.Mutex
	phase    string
	lastDone int64
	lastAt   time.Duration
	rate     float64 // completions per second, smoothed
}

func newProgressLine(w io.Writer) *progressLine { return &progressLine{w: w} }

const barWidth = 24

// update is a loadgen.Config.Progress callback.
func (p *progressLine) update(pr loadgen.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr.Done {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.phase = ""
		return
	}
	done := pr.OK + pr.Errors
	if pr.Phase != p.phase {
		p.phase, p.lastDone, p.lastAt, p.rate = pr.Phase, 0, 0, 0
	}
	if dt := (pr.Elapsed - p.lastAt).Seconds(); dt > 0 {
		r := float64(done-p.lastDone) / dt
		if p.rate == 0 {
			p.rate = r
		} else {
			p.rate = 0.7*p.rate + 0.3*r
		}
	}
	p.lastDone, p.lastAt = done, pr.Elapsed

	frac := -1.0
	switch {
	case pr.Requests > 0:
		frac = float64(done) / float64(pr.Requests)
	case pr.Duration > 0:
		frac = pr.Elapsed.Seconds() / pr.Duration.Seconds()
	}
	bar := ""
	if frac >= 0 {
		frac = min(frac, 1)
		n := int(frac * barWidth)
		bar = fmt.Sprintf(" [%s%s] %3.0f%%", strings.Repeat("=", n), strings.Repeat(" ", barWidth-n), 100*frac)
	}
	fmt.Fprintf(p.w, "\r\x1b[K%-8s %6.1fs%s  ok %d  err %d  in flight %d  %.0f/s",
		pr.Phase, pr.Elapsed.Seconds(), bar, pr.OK, pr.Errors, pr.InFlight, p.rate)
}
