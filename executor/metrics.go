package executor

import "github.com/pipeline-dev/pipeline/broker"

// count records a job whose result was stored, by outcome and error code.
func (e *Executor) count(res *broker.Result) {
	if res.Error != nil {
		e.m.Error(res.Error.Code)
		return
	}
	e.m.Result()
}
