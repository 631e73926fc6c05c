package client

import (
	"errors"
	"fmt"
)

// Code is a wire error code (PROTOCOL.md §1, §1.1).
type Code string

// Wire error codes an origin may send.
const (
	CodeBadRequest         Code = "bad_request"
	CodeInvalidURL         Code = "invalid_url"
	CodeBlockedDestination Code = "blocked_destination"
	CodeTooLarge           Code = "too_large"
	CodeQueueFull          Code = "queue_full"
	CodeTimeout            Code = "timeout"
	CodeFetchFailed        Code = "fetch_failed"
	CodeUnauthorized       Code = "unauthorized"
	CodeInternal           Code = "internal"
	// CodeDeadLetter marks a job that exhausted its deliveries.
	CodeDeadLetter Code = "dead_letter"
	// CodeNotFound answers a get-result or cancel for an unknown job or key.
	CodeNotFound Code = "not_found"
	// CodeResultExpired: the job finished but its result is no longer kept.
	CodeResultExpired Code = "result_expired"
	// CodeCanceled is the final error of a canceled job.
	CodeCanceled Code = "canceled"
	// CodeAlreadyFinished answers a cancel for a job that has finished.
	CodeAlreadyFinished Code = "already_finished"
	// CodeCircuitOpen: the destination's circuit breaker is open.
	CodeCircuitOpen Code = "circuit_open"
)

// Error is a failure the origin reported in an error frame. Job is the job
// id when the origin named one. Read it with errors.As; compare Code with
// the Code constants.
type Error struct {
	Code    Code
	Message string
	Job     string
}

// Error returns "client: code: message".
func (e *Error) Error() string {
	if e.Message == "" {
		return "client: " + string(e.Code)
	}
	return "client: " + string(e.Code) + ": " + e.Message
}

// CallError is a failed Call: Status is the HTTP status the origin's /call
// answered with and Message the text of its {"error":"..."} body (see
// origin.CallError for what each status means). Read it with errors.As.
type CallError struct {
	Status  int
	Message string
}

// Error returns "client: call: HTTP status: message".
func (e *CallError) Error() string {
	return fmt.Sprintf("client: call: HTTP %d: %s", e.Status, e.Message)
}

// Sentinel errors.
var (
	// ErrClosed is returned by calls on a Client after Close, and by
	// fetches still waiting when Close was called.
	ErrClosed = errors.New("client: closed")
	// ErrDisconnected is returned by fetches (and new calls) while the
	// client has failed to reconnect for longer than the reconnect timeout
	// (WithReconnectTimeout). The client keeps trying to reconnect.
	ErrDisconnected = errors.New("client: disconnected from the origin")
	// ErrConnectionLost is returned by a Cancel whose connection dropped
	// before the origin answered; whether the cancel took effect is
	// unknown, and it is safe to call Cancel again.
	ErrConnectionLost = errors.New("client: connection lost before the reply")
	// ErrAbandoned is the result of a Pending fetch after Abandon.
	ErrAbandoned = errors.New("client: fetch abandoned")
)
