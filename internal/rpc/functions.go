package rpc

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
)

// Function names (the last token of the endpoint subject and of /rpc/<fn>).
const (
	FnEcho      = "echo"
	FnTransform = "transform"
	FnCompute   = "compute"
)

// Default limits.
const (
	// DefaultMaxPayload is the default cap on a request body: 1 MiB.
	DefaultMaxPayload = 1 << 20
	// DefaultMaxRounds is the default (and PROTOCOL.md §3) cap on compute's
	// rounds.
	DefaultMaxRounds = 1_000_000
)

// Functions returns the names of the runtime functions in a stable order.
func Functions() []string { return []string{FnEcho, FnTransform, FnCompute} }

// Limits bounds what a function accepts. The zero value uses the defaults.
type Limits struct {
	// MaxPayload caps the request body in bytes; a larger body fails with a
	// 413 *Error. If zero or negative, DefaultMaxPayload (1 MiB) is used.
	MaxPayload int
	// MaxRounds caps compute's rounds; more fails with a 400 *Error. If zero
	// or negative, DefaultMaxRounds (1,000,000) is used.
	MaxRounds int
}

// DefaultLimits returns the limits used when none are configured.
func DefaultLimits() Limits {
	return Limits{MaxPayload: DefaultMaxPayload, MaxRounds: DefaultMaxRounds}
}

// withDefaults fills unset fields.
func (l Limits) withDefaults() Limits {
	if l.MaxPayload <= 0 {
		l.MaxPayload = DefaultMaxPayload
	}
	if l.MaxRounds <= 0 {
		l.MaxRounds = DefaultMaxRounds
	}
	return l
}

// Call runs function fn on body inline under limits l and returns the reply
// body. It fails with an *Error: 404 for an unknown function, 413 for a body
// over l.MaxPayload, 400 for a body the function cannot accept. The reply may
// alias body (echo returns it as is). Call is safe for concurrent use.
func (l Limits) Call(fn string, body []byte) ([]byte, error) {
	l = l.withDefaults()
	if !knownFunction(fn) {
		return nil, unknownFunction(fn)
	}
	if len(body) > l.MaxPayload {
		return nil, tooLarge(len(body), l.MaxPayload)
	}
	var (
		out []byte
		err *Error
	)
	switch fn {
	case FnEcho:
		out = body
	case FnTransform:
		out, err = transform(body)
	case FnCompute:
		out, err = compute(body, l.MaxRounds)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Call runs function fn on body inline under DefaultLimits (the direct path).
// See Limits.Call for errors.
func Call(fn string, body []byte) ([]byte, error) {
	return DefaultLimits().Call(fn, body)
}

// Echo returns body unchanged. It never fails; the error is there so that
// every function has the same shape.
func Echo(body []byte) ([]byte, error) { return body, nil }

// Transform reads {"data":"<string>"} and returns
// {"data":"<data upper-cased>","length":<len of data in bytes>}, upper-casing
// each character with its simple Unicode mapping (as strings.ToUpper). Other
// members of the object are ignored. It fails with a 400 *Error when body is
// not a JSON object or "data" is missing or not a string.
func Transform(body []byte) ([]byte, error) {
	out, err := transform(body)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Compute reads {"data":"<string>","rounds":N} and returns
// {"digest":"<hex>"}, where digest is SHA-256 applied N times: h1 =
// sha256(data bytes), hk = sha256(h(k-1)'s 32 raw bytes). It fails with a 400
// *Error when body is not a JSON object, "data" is missing or not a string,
// or "rounds" is missing or not an integer in [1, DefaultMaxRounds].
func Compute(body []byte) ([]byte, error) {
	out, err := compute(body, DefaultMaxRounds)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ContentType is the media type of fn's reply body: application/json for
// transform and compute, application/octet-stream for echo.
func ContentType(fn string) string {
	if fn == FnEcho {
		return "application/octet-stream"
	}
	return "application/json"
}

func transform(body []byte) ([]byte, *Error) {
	f, err := parseFields(body, false)
	if err != nil {
		return nil, err
	}
	if err := f.needData(); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(f.data)+len(`{"data":"","length":}`)+20)
	out = append(out, `{"data":`...)
	out = appendJSONString(out, f.data, true)
	out = append(out, `,"length":`...)
	out = strconv.AppendInt(out, int64(len(f.data)), 10)
	return append(out, '}'), nil
}

func compute(body []byte, maxRounds int) ([]byte, *Error) {
	f, err := parseFields(body, true)
	if err != nil {
		return nil, err
	}
	if err := f.needData(); err != nil {
		return nil, err
	}
	switch {
	case f.badRounds:
		return nil, badInput(`"rounds" must be an integer`)
	case !f.hasRounds:
		return nil, badInput(`"rounds" is required`)
	}
	rounds, err := parseRounds(f.rounds, maxRounds)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(f.data)
	for range rounds - 1 {
		sum = sha256.Sum256(sum[:])
	}
	out := make([]byte, 0, len(`{"digest":""}`)+2*sha256.Size)
	out = append(out, `{"digest":"`...)
	out = hex.AppendEncode(out, sum[:])
	return append(out, `"}`...), nil
}

// needData checks that the body had a string "data".
func (f *fields) needData() *Error {
	switch {
	case f.badData:
		return badInput(`"data" must be a string`)
	case !f.hasData:
		return badInput(`"data" is required`)
	}
	return nil
}

func knownFunction(fn string) bool {
	return fn == FnEcho || fn == FnTransform || fn == FnCompute
}

func unknownFunction(fn string) *Error {
	return errorf(http.StatusNotFound, "unknown function %q (want echo, transform or compute)", fn)
}

func tooLarge(n, max int) *Error {
	return errorf(http.StatusRequestEntityTooLarge, "payload of %d bytes is over the %d-byte limit", n, max)
}
