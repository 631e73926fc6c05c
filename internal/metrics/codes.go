package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pipeline-dev/pipeline/broker"
)

// Outcome label values of the *_jobs_total and *_fetches_total counters.
const (
	// OutcomeResult is a fetch that got a response (any HTTP status).
	OutcomeResult = "result"
	// OutcomeError is a fetch that ended with an error frame.
	OutcomeError = "error"
)

// codeOther labels an error code outside the wire contract's closed set (it
// should never be seen; it keeps the label set bounded if it is).
const codeOther = "other"

// errorCodes is the closed set of code label values, in a fixed order;
// codeIndex maps a code to its position.
func errorCodes() []string {
	return []string{
		string(broker.CodeBadRequest),
		string(broker.CodeInvalidURL),
		string(broker.CodeBlockedDestination),
		string(broker.CodeTooLarge),
		string(broker.CodeQueueFull),
		string(broker.CodeTimeout),
		string(broker.CodeFetchFailed),
		string(broker.CodeUnauthorized),
		string(broker.CodeInternal),
		string(broker.CodeDeadLetter),
		codeOther,
	}
}

// codeIndex is the position of code in errorCodes, without allocating.
func codeIndex(code broker.Code) int {
	switch code {
	case broker.CodeBadRequest:
		return 0
	case broker.CodeInvalidURL:
		return 1
	case broker.CodeBlockedDestination:
		return 2
	case broker.CodeTooLarge:
		return 3
	case broker.CodeQueueFull:
		return 4
	case broker.CodeTimeout:
		return 5
	case broker.CodeFetchFailed:
		return 6
	case broker.CodeUnauthorized:
		return 7
	case broker.CodeInternal:
		return 8
	case broker.CodeDeadLetter:
		return 9
	}
	return 10
}

// outcomeCounters are the children of an {outcome,code} counter, resolved
// once: one for results (code="") and one per error code.
type outcomeCounters struct {
	result prometheus.Counter
	errors []prometheus.Counter // indexed by codeIndex
}

func newOutcomeCounters(vec *prometheus.CounterVec) outcomeCounters {
	oc := outcomeCounters{result: vec.WithLabelValues(OutcomeResult, "")}
	for _, c := range errorCodes() {
		oc.errors = append(oc.errors, vec.WithLabelValues(OutcomeError, c))
	}
	return oc
}

func (oc *outcomeCounters) err(code broker.Code) { oc.errors[codeIndex(code)].Inc() }
