package broker

import "errors"

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
)

// Sentinel errors.
var (
	// ErrServerNotReady is returned when the embedded server does not accept
	// connections (or JetStream is not ready) within the start deadline.
	ErrServerNotReady = errors.New("broker: embedded NATS server not ready")
	// ErrQueueFull is returned when the jobs stream refuses a job because a
	// stream limit is reached.
	ErrQueueFull = errors.New("broker: jobs stream is full")
)
