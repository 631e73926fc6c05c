package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/broker"
)

// Label names of an outcome counter (NewOutcomeCounters).
const (
	// LabelOutcome is OutcomeResult or OutcomeError.
	LabelOutcome = "outcome"
	// LabelCode is the wire error code of an error (one of broker.Codes,
	// else CodeOther), and "" for a result.
	LabelCode = "code"
)

// Outcome label values of the *_jobs_total and *_fetches_total counters.
const (
	// OutcomeResult is a fetch that got a response (any HTTP status).
	OutcomeResult = "result"
	// OutcomeError is a fetch that ended with an error frame.
	OutcomeError = "error"
)

// CodeOther labels an error code outside the wire contract's closed set
// (broker.Codes). It should never be seen; it keeps the label set bounded
// if it is.
const CodeOther = "other"

// OutcomeCounters is a counter family with the labels {outcome, code}: one
// child for results (code="") and one per wire error code, all resolved
// when it is made, so every child is exported from the start (at 0) and
// counting allocates nothing. It is a prometheus.Collector: register it
// once. Its methods are safe for concurrent use.
type OutcomeCounters struct {
	vec    *prometheus.CounterVec
	result prometheus.Counter
	errors map[broker.Code]prometheus.Counter // read-only once made
	other  prometheus.Counter
}

// NewOutcomeCounters returns the outcome counters named by opts, with a
// child for every code in broker.Codes and for CodeOther.
func NewOutcomeCounters(opts prometheus.CounterOpts) *OutcomeCounters {
	vec := prometheus.NewCounterVec(opts, []string{LabelOutcome, LabelCode})
	codes := broker.Codes()
	oc := &OutcomeCounters{
		vec:    vec,
		result: vec.WithLabelValues(OutcomeResult, ""),
		errors: make(map[broker.Code]prometheus.Counter, len(codes)),
		other:  vec.WithLabelValues(OutcomeError, CodeOther),
	}
	for _, c := range codes {
		oc.errors[c] = vec.WithLabelValues(OutcomeError, string(c))
	}
	return oc
}

// Result counts one outcome=result.
func (oc *OutcomeCounters) Result() { oc.result.Inc() }

// Error counts one outcome=error with code; a code outside broker.Codes is
// counted as CodeOther.
func (oc *OutcomeCounters) Error(code broker.Code) {
	if c, ok := oc.errors[code]; ok {
		c.Inc()
		return
	}
	oc.other.Inc()
}

// Describe implements prometheus.Collector.
func (oc *OutcomeCounters) Describe(ch chan<- *prometheus.Desc) { oc.vec.Describe(ch) }

// Collect implements prometheus.Collector.
func (oc *OutcomeCounters) Collect(ch chan<- prometheus.Metric) { oc.vec.Collect(ch) }
