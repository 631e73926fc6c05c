package loadgen

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// SweepConfig describes a sweep: one run per concurrency level.
type SweepConfig struct {
	// Base is applied to every level, with Concurrency replaced by the level.
	// When Base.Requests and Base.Duration are both zero, each level sends
	// Level×Rounds fetches — with Rounds 1, all fetches of a level start at
	// once, the burst measured in the original proxy-fetch study.
	Base   Config
	Levels []int
	// Rounds is the number of fetches per slot when the base config sets no
	// count or duration. If zero, 1.
	Rounds int
	// Warmup, if non-nil, sizes each level's warm-up from its concurrency
	// and measured request count (0 when bounded by duration); otherwise
	// Base's warm-up applies to every level.
	Warmup func(concurrency, requests int) (n int, d time.Duration)
}

// RunSweep runs Base at each concurrency level in turn, each on fresh
// connections, and sets every run's PctOfLinear against the first level.
// It stops at the first level that fails and returns the levels done so
// far with the error.
func RunSweep(ctx context.Context, sc SweepConfig) (*SweepReport, error) {
	if len(sc.Levels) == 0 {
		return nil, errors.New("loadgen: sweep: no concurrency levels")
	}
	for _, l := range sc.Levels {
		if l <= 0 {
			return nil, fmt.Errorf("loadgen: sweep: level %d must be positive", l)
		}
	}
	rounds := max(sc.Rounds, 1)
	out := &SweepReport{Mode: "sweep"}
	for _, level := range sc.Levels {
		cfg := sc.Base
		cfg.Concurrency = level
		if cfg.Requests == 0 && cfg.Duration == 0 {
			cfg.Requests = level * rounds
		}
		if sc.Warmup != nil {
			cfg.WarmupRequests, cfg.WarmupDuration = sc.Warmup(level, cfg.Requests)
		}
		rep, err := Run(ctx, cfg)
		if rep != nil {
			out.Runs = append(out.Runs, rep)
		}
		if err != nil {
			out.setLinear()
			return out, fmt.Errorf("loadgen: sweep at concurrency %d: %w", level, err)
		}
	}
	out.setLinear()
	return out, nil
}

// setLinear sets each run's time per fetch as a percentage of the first
// run's: 100% means concurrency bought nothing, 10% a tenfold gain.
func (s *SweepReport) setLinear() {
	if len(s.Runs) == 0 || s.Runs[0].TimePerFetchMS <= 0 {
		return
	}
	ref := s.Runs[0].TimePerFetchMS
	for _, r := range s.Runs {
		r.PctOfLinear = 100 * (r.TimePerFetchMS / ref)
	}
}
