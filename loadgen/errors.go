package loadgen

import "errors"

// ErrNoOrigin is returned (wrapped, with each origin's dial error) by Run
// when no origin accepted a WebSocket connection and sent its hello frame.
var ErrNoOrigin = errors.New("loadgen: no origin answered")

// Client-side error codes, counted in Report.ErrorsByCode beside the codes
// the origin sends (PROTOCOL.md §1).
const (
	// CodeTimeout counts fetches that got neither a result nor an error frame
	// within Config.Timeout. It is the same word as the origin's own timeout
	// code on purpose: to the client both mean "too slow".
	CodeTimeout = "timeout"
	// CodeConnectionLost counts fetches in flight on a WebSocket that closed.
	CodeConnectionLost = "connection_lost"
	// CodeCanceled counts fetches abandoned because the run was interrupted.
	CodeCanceled = "canceled"
)
