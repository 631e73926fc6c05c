package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"github.com/pipeline-dev/pipeline/broker"
)

// Names of the built-in functions (the last token of the endpoint subject
// and of /rpc/<fn>).
const (
	FnEcho      = "echo"
	FnTransform = "transform"
	FnCompute   = "compute"
)

// Echo returns req unchanged. It never fails.
func Echo(_ context.Context, req []byte) ([]byte, error) { return req, nil }

// Transform reads {"data":"<string>"} and returns
// {"data":"<data upper-cased>","length":<len of data in bytes>}, upper-casing
// each character with its simple Unicode mapping (as strings.ToUpper). Other
// members of the object are ignored. It fails with a CodeBadRequest
// *broker.Error when req is not a JSON object or "data" is missing or not a
// string.
func Transform(_ context.Context, req []byte) ([]byte, error) {
	out, err := transform(req)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Compute reads {"data":"<string>","rounds":N} and returns
// {"digest":"<hex>"}, where digest is SHA-256 applied N times: h1 =
// sha256(data bytes), hk = sha256(h(k-1)'s 32 raw bytes). It fails with a
// CodeBadRequest *broker.Error when req is not a JSON object, "data" is
// missing or not a string, or "rounds" is missing or not an integer in [1,
// DefaultMaxRounds]; and with ctx's error when ctx ends during the rounds.
// A Registry's compute uses the registry's Limits.MaxRounds instead.
func Compute(ctx context.Context, req []byte) ([]byte, error) {
	return compute(ctx, req, DefaultMaxRounds)
}

// contentType is the media type of fn's reply body: application/json for
// transform and compute, application/octet-stream for echo and user
// functions.
func contentType(fn string) string {
	if fn == FnTransform || fn == FnCompute {
		return "application/json"
	}
	return "application/octet-stream"
}

func transform(body []byte) ([]byte, *broker.Error) {
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

// ctxCheckRounds is how many rounds compute runs between looks at ctx
// (about a millisecond of hashing).
const ctxCheckRounds = 1 << 12

func compute(ctx context.Context, body []byte, maxRounds int) ([]byte, error) {
	f, berr := parseFields(body, true)
	if berr != nil {
		return nil, berr
	}
	if berr := f.needData(); berr != nil {
		return nil, berr
	}
	switch {
	case f.badRounds:
		return nil, badInput(`"rounds" must be an integer`)
	case !f.hasRounds:
		return nil, badInput(`"rounds" is required`)
	}
	rounds, berr := parseRounds(f.rounds, maxRounds)
	if berr != nil {
		return nil, berr
	}
	sum := sha256.Sum256(f.data)
	for i := 1; i < rounds; i++ {
		if i%ctxCheckRounds == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		sum = sha256.Sum256(sum[:])
	}
	out := make([]byte, 0, len(`{"digest":""}`)+2*sha256.Size)
	out = append(out, `{"digest":"`...)
	out = hex.AppendEncode(out, sum[:])
	return append(out, `"}`...), nil
}

// needData checks that the body had a string "data".
func (f *fields) needData() *broker.Error {
	switch {
	case f.badData:
		return badInput(`"data" must be a string`)
	case !f.hasData:
		return badInput(`"data" is required`)
	}
	return nil
}
