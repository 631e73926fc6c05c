package loadgen

import (
	"context"
	"fmt"
	"html/template"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// Set is one connection set of a multi-set run: its own origins, target,
// load model and counts.
type Set struct {
	// Name labels the set in reports ("main", "noisy").
	Name string
	// Config is the set's load; each set has its own connections.
	Config Config
	// StopWithFirst, when set, stops this set (its report is then partial)
	// as soon as the first set of the run has finished.
	StopWithFirst bool
}

// SetsReport is the outcome of RunSets: one report per set, in the order
// given. Its JSON form is {"mode":"sets","sets":[{"name":...,<report>}...]}.
type SetsReport struct {
	Mode string       `json:"mode"` // "sets"
	Sets []*SetReport `json:"sets"`
}

// SetReport is one set's report with its name.
type SetReport struct {
	Name string `json:"name"`
	// Stopped is true when the set was stopped because the first set
	// finished (Set.StopWithFirst): its counts cover only that time.
	Stopped bool `json:"stopped,omitempty"`
	*Report
}

// RunSets runs every set at the same time, each on its own connections,
// and reports them separately: e.g. a measured client next to a noisy
// neighbour hammering a hanging host or queueing a deep backlog. A set's
// failure does not stop the others; the first error is returned with
// whatever reports were made. It is safe to call from one goroutine; the
// sets run on their own goroutines, which have all ended when it returns.
func RunSets(ctx context.Context, sets []Set) (*SetsReport, error) {
	if len(sets) == 0 {
		return nil, fmt.Errorf("loadgen: no connection set")
	}
	out := &SetsReport{Mode: "sets", Sets: make([]*SetReport, len(sets))}
	errs := make([]error, len(sets))
	firstDone := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range sets {
		sctx, cancel := context.WithCancel(ctx)
		wg.Add(1)
		go func(i int, s Set) {
			defer wg.Done()
			defer cancel()
			if i == 0 {
				defer close(firstDone)
			} else if s.StopWithFirst {
				go func() {
					select {
					case <-firstDone:
						cancel()
					case <-sctx.Done():
					}
				}()
			}
			rep, err := Run(sctx, s.Config)
			stopped := i > 0 && s.StopWithFirst && ctx.Err() == nil && sctx.Err() != nil
			if stopped {
				err = nil // stopped on purpose
			}
			if rep != nil {
				out.Sets[i] = &SetReport{Name: s.Name, Stopped: stopped, Report: rep}
			}
			if err != nil {
				errs[i] = fmt.Errorf("set %s: %w", s.Name, err)
			}
		}(i, s)
	}
	wg.Wait()
	var err error
	for _, e := range errs {
		if e != nil {
			err = e
			break
		}
	}
	sets2 := out.Sets[:0]
	for _, r := range out.Sets {
		if r != nil {
			sets2 = append(sets2, r)
		}
	}
	out.Sets = sets2
	if len(out.Sets) == 0 {
		return nil, err
	}
	return out, err
}

// WriteJSON writes the sets as one indented JSON object.
func (s *SetsReport) WriteJSON(w io.Writer) error { return writeJSON(w, s) }

// WriteText writes a summary table with one row per set, then each set's
// full report under its name.
func (s *SetsReport) WriteText(w io.Writer) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "set\tin flight\trequests\tok\terrors\tthroughput/s\tp50 ms\tp99 ms\tmax ms\t")
	for _, r := range s.Sets {
		name := r.Name
		if r.Stopped {
			name += " (stopped)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t\n", name, r.Concurrency, r.Requests, r.OK, r.Errors,
			fmtCount(r.ThroughputRPS), fmtMs(r.LatencyMS.P50), fmtMs(r.LatencyMS.P99), fmtMs(r.LatencyMS.Max))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("loadgen: write sets table: %w", err)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("loadgen: write sets table: %w", err)
	}
	for _, r := range s.Sets {
		head := fmt.Sprintf("\n== set %s ==\n", r.Name)
		if r.Stopped {
			head = fmt.Sprintf("\n== set %s (stopped when set %s finished) ==\n", r.Name, s.Sets[0].Name)
		}
		if _, err := io.WriteString(w, head); err != nil {
			return fmt.Errorf("loadgen: write sets report: %w", err)
		}
		if err := r.WriteText(w); err != nil {
			return err
		}
	}
	return nil
}

// WriteHTML writes one self-contained page: headline numbers of every set,
// then each set's latency CDF and table.
func (s *SetsReport) WriteHTML(w io.Writer) error {
	page := htmlPage{Title: "loadgen: connection sets"}
	if len(s.Sets) > 0 {
		r0 := s.Sets[0]
		page.Sub = r0.StartedAt.Format(time.RFC1123)
	}
	for _, r := range s.Sets {
		note := fmt.Sprintf("%s · target %s · %d ok, %d errors", r.loadModel(), r.TargetURL, r.OK, r.Errors)
		if r.Stopped {
			note += " · stopped when the first set finished"
		}
		page.Cards = append(page.Cards,
			card{r.Name + ": p99", fmtMs(r.LatencyMS.P99) + " ms", "p50 " + fmtMs(r.LatencyMS.P50) + " ms · " + note},
			card{r.Name + ": throughput", fmtCount(r.ThroughputRPS) + "/s", originList(r.Origins)},
		)
		if r.stats != nil && r.latency.Count() > 0 {
			page.Charts = append(page.Charts, namedChart{"Latency CDF: " + r.Name,
				"Share of this set's fetches completed within a latency (end to end, client side).", template.HTML(r.cdfChart())})
		}
		page.Tables = append(page.Tables, template.HTML("<h2>"+template.HTMLEscapeString(r.Name)+"</h2>"), template.HTML(r.latencyTable()))
	}
	return page.write(w, s)
}
