package runtime

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/pipeline-dev/pipeline/broker"
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrStopped is returned by Service.Start and HTTPServer.Start after
	// Shutdown: a stopped server cannot be started again.
	ErrStopped = errors.New("runtime: stopped")
	// ErrStarted is returned by Service.Start and HTTPServer.Start when the
	// server runs already.
	ErrStarted = errors.New("runtime: already started")
	// ErrUnknownFunction is the cause of a call to a function that is not
	// registered. It maps to status 404 over HTTP and NATS.
	ErrUnknownFunction = errors.New("runtime: unknown function")
	// ErrDuplicateFunction is returned by Registry.Register for a name that
	// is registered already.
	ErrDuplicateFunction = errors.New("runtime: function already registered")
	// ErrRegistrySealed is returned by Registry.Register once a Service
	// serves the registry: its NATS endpoints are fixed when it starts.
	ErrRegistrySealed = errors.New("runtime: registry is served already; register functions before Service.Start")
)

// unknownFunctionError is a call to a function that is not registered. Its
// message lists the registered ones; it matches ErrUnknownFunction.
type unknownFunctionError struct {
	fn    string
	known []string
}

func (e *unknownFunctionError) Error() string {
	want := strings.Join(e.known, ", ")
	if i := strings.LastIndex(want, ", "); i >= 0 {
		want = want[:i] + " or " + want[i+2:]
	}
	return "unknown function " + strconv.Quote(e.fn) + " (want " + want + ")"
}

func (e *unknownFunctionError) Is(target error) bool { return target == ErrUnknownFunction }

// badInput reports a request body a function cannot accept (status 400).
func badInput(format string, args ...any) *broker.Error {
	return broker.Errorf(broker.CodeBadRequest, format, args...)
}

// tooLarge reports a request body over the payload limit (status 413).
func tooLarge(n, max int) *broker.Error {
	return broker.Errorf(broker.CodeTooLarge, "payload of %d bytes is over the %d-byte limit", n, max)
}

// status maps a call's error to the HTTP-style status that describes it,
// used unchanged as the HTTP status and as the Nats-Service-Error-Code
// header, and to the message sent as {"error": message} and in the
// Nats-Service-Error header. This is the one place runtime errors map to
// statuses:
//
//   - ErrUnknownFunction: 404;
//   - a *broker.Error (or an error CodeOf maps) with CodeBadRequest: 400,
//     CodeTooLarge: 413, CodeTimeout: 504; its Message is sent;
//   - anything else: 500 with the error's text.
//
// It returns 0 and "" for a nil err.
func status(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	if errors.Is(err, ErrUnknownFunction) {
		var u *unknownFunctionError
		if errors.As(err, &u) {
			return http.StatusNotFound, u.Error()
		}
		return http.StatusNotFound, err.Error()
	}
	msg := err.Error()
	var be *broker.Error
	if errors.As(err, &be) {
		msg = be.Message
	}
	switch broker.CodeOf(err) {
	case broker.CodeBadRequest:
		return http.StatusBadRequest, msg
	case broker.CodeTooLarge:
		return http.StatusRequestEntityTooLarge, msg
	case broker.CodeTimeout:
		return http.StatusGatewayTimeout, msg
	}
	return http.StatusInternalServerError, msg
}

// statusOf is the status of err alone (0 for nil), for the metrics.
func statusOf(err error) int {
	code, _ := status(err)
	return code
}

// appendErrorJSON appends {"error":"<msg>"} to b.
func appendErrorJSON(b []byte, msg string) []byte {
	b = append(b, `{"error":`...)
	b = appendJSONString(b, []byte(msg), false)
	return append(b, '}')
}
