package rpc

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a typed delegation error. Code is the HTTP-style status that
// describes it, used unchanged as the HTTP status and as the value of the
// Nats-Service-Error-Code header; Message is the human-readable reason sent
// as {"error": Message} over HTTP and in the Nats-Service-Error header.
//
// Codes in use: 400 bad input, 404 unknown function or via, 405 wrong HTTP
// method, 413 payload over Limits.MaxPayload, 500 internal, 502 runtime
// unreachable, 504 timeout. Read it with errors.As.
type Error struct {
	Code    int
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("rpc error %d: %s", e.Code, e.Message)
}

// errorf builds an *Error with a formatted message.
func errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// badInput reports a request body the function cannot accept.
func badInput(format string, args ...any) *Error {
	return errorf(http.StatusBadRequest, format, args...)
}

// AsError returns err as an *Error: the one inside err's chain if there is
// one, otherwise a 500 carrying err's text. It returns nil for a nil err.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: http.StatusInternalServerError, Message: err.Error()}
}

// appendErrorJSON appends {"error":"<msg>"} to b.
func appendErrorJSON(b []byte, msg string) []byte {
	b = append(b, `{"error":`...)
	b = appendJSONString(b, []byte(msg), false)
	return append(b, '}')
}
