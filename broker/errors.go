package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Code is a wire error code (PROTOCOL.md §1). The set is closed: every error
// frame carries one of these.
type Code string

// Wire error codes.
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
	// CodeNotFound answers a get-result (or cancel) for a job the origin
	// does not know (PROTOCOL.md §1.1).
	CodeNotFound Code = "not_found"
	// CodeResultExpired answers a get-result for a job known to have
	// finished whose result is no longer retained (PROTOCOL.md §1.1).
	CodeResultExpired Code = "result_expired"
	// CodeCanceled is the final frame of a job canceled by a cancel frame.
	CodeCanceled Code = "canceled"
	// CodeAlreadyFinished answers a cancel of a job that has its final frame.
	CodeAlreadyFinished Code = "already_finished"
)

// Codes lists every wire error code in a fixed order (metrics resolve one
// label child per code from it).
func Codes() []Code {
	return []Code{
		CodeBadRequest, CodeInvalidURL, CodeBlockedDestination, CodeTooLarge, CodeQueueFull,
		CodeTimeout, CodeFetchFailed, CodeUnauthorized, CodeInternal, CodeDeadLetter, CodeNotFound,
		CodeResultExpired, CodeCanceled, CodeAlreadyFinished,
	}
}

// Sentinel errors.
var (
	// ErrServerNotReady is returned when the embedded server does not accept
	// connections (or JetStream is not ready) within the start deadline.
	ErrServerNotReady = errors.New("broker: embedded NATS server not ready")
	// ErrQueueFull is returned when the jobs stream refuses a job because a
	// stream limit is reached. CodeOf maps it to CodeQueueFull.
	ErrQueueFull = errors.New("broker: jobs stream is full")
	// ErrServerClosed is returned by Start after Shutdown, and by calls on a
	// server that was shut down.
	ErrServerClosed = errors.New("broker: server closed")
)

// Error is the one error type that carries a wire code: every failure a
// client is told about (an error frame, a failed job's result) is an *Error,
// or is turned into one by CodeOf and ErrorOf. Message is what the client
// reads; Err, when set, is the cause (for errors.Is/As and logs) and is not
// sent on the wire. An *Error is immutable once made and safe to share.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Err     error  `json:"-"`
}

// Error returns "code: message".
func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Unwrap returns the cause, or nil.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted message. A %w verb in
// format makes that error the cause.
func Errorf(code Code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), Err: errors.Unwrap(err)}
}

// WrapError returns err as an *Error with code, its message being err's.
// It returns nil for a nil err.
func WrapError(code Code, err error) *Error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Message: err.Error(), Err: err}
}

// CodeOf is the wire code of err: the code of the first *Error in its chain,
// CodeQueueFull for a full jobs stream (ErrQueueFull, or JetStream's own
// store-limit errors), CodeTimeout for a context deadline, "" for nil, and
// CodeInternal for anything else. It is the one place errors map to codes.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, ErrQueueFull) || isStoreFull(err):
		return CodeQueueFull
	case errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	}
	return CodeInternal
}

// ErrorOf returns err as an *Error: err itself when its chain holds one,
// else a new *Error with CodeOf(err) and err's message. Nil for nil.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return WrapError(CodeOf(err), err)
}

// isStoreFull reports whether err is JetStream refusing a message because a
// stream limit (messages, bytes) or the server's storage is exhausted.
func isStoreFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch server.ErrorIdentifier(apiErr.ErrorCode) {
	case server.JSInsufficientResourcesErr, server.JSStorageResourcesExceededErr, server.JSMemoryResourcesExceededErr:
		return true
	case server.JSStreamStoreFailedF: // its description is the store's error
		d := apiErr.Description
		return d == server.ErrMaxMsgs.Error() || d == server.ErrMaxBytes.Error()
	}
	return false
}

// IsWrongLastMsgID reports whether err is JetStream refusing a publish whose
// Nats-Expected-Last-Msg-Id did not match (nothing was stored).
func IsWrongLastMsgID(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && server.ErrorIdentifier(apiErr.ErrorCode) == server.JSStreamWrongLastMsgIDErrF
}
