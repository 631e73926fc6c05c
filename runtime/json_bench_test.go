package runtime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// The A/B comparison of the hand-written JSON reader/writer (json.go) with
// encoding/json on the path where it is used: decoding transform and compute
// requests and encoding their replies. stdTransform and stdCompute are what
// the functions would be with the standard library (encoding/json/v2 needs
// GOEXPERIMENT=jsonv2 with Go 1.26, so it is not a candidate).
//
//	go test -run '^$' -bench 'JSONPath' -count 6 ./runtime/ | benchstat -col /impl -

// stdTransform is transform written with encoding/json.
func stdTransform(body []byte) ([]byte, error) {
	var in struct {
		Data *string `json:"data"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badInput("invalid JSON: %v", err)
	}
	if in.Data == nil {
		return nil, badInput(`"data" is required`)
	}
	var buf bytes.Buffer
	buf.Grow(len(*in.Data) + 32)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(struct {
		Data   string `json:"data"`
		Length int    `json:"length"`
	}{strings.ToUpper(*in.Data), len(*in.Data)})
	if err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// stdCompute is compute written with encoding/json.
func stdCompute(body []byte, maxRounds int) ([]byte, error) {
	var in struct {
		Data   *string     `json:"data"`
		Rounds json.Number `json:"rounds"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, badInput("invalid JSON: %v", err)
	}
	if in.Data == nil {
		return nil, badInput(`"data" is required`)
	}
	n, err := strconv.ParseInt(string(in.Rounds), 10, 64)
	if err != nil || n < 1 || n > int64(maxRounds) {
		return nil, badInput(`"rounds" must be between 1 and %d`, maxRounds)
	}
	sum := sha256.Sum256([]byte(*in.Data))
	for i := int64(1); i < n; i++ {
		sum = sha256.Sum256(sum[:])
	}
	return json.Marshal(struct {
		Digest string `json:"digest"`
	}{hex.EncodeToString(sum[:])})
}

// TestJSONVariantsAgree makes sure the benchmark compares equal work: both
// implementations give the same reply to every valid request.
func TestJSONVariantsAgree(t *testing.T) {
	ctx := context.Background()
	for _, tc := range validCases() {
		var hand, std []byte
		var err1, err2 error
		switch tc.fn {
		case FnTransform:
			hand, err1 = Transform(ctx, tc.body)
			std, err2 = stdTransform(tc.body)
		case FnCompute:
			hand, err1 = Compute(ctx, tc.body)
			std, err2 = stdCompute(tc.body, DefaultMaxRounds)
		default:
			continue
		}
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: hand-written %v, encoding/json %v", tc.name, err1, err2)
		}
		if !bytes.Equal(hand, std) {
			t.Fatalf("%s: hand-written %.80q, encoding/json %.80q", tc.name, hand, std)
		}
	}
}

// BenchmarkJSONPath runs transform and compute (1 round, so that hashing
// does not hide the JSON work) on 100 B to 100 KB requests, with the
// hand-written reader (impl=hand) and with encoding/json (impl=std).
func BenchmarkJSONPath(b *testing.B) {
	ctx := context.Background()
	impls := []struct {
		name      string
		transform func([]byte) ([]byte, error)
		compute   func([]byte) ([]byte, error)
	}{
		{"hand", func(p []byte) ([]byte, error) { return Transform(ctx, p) },
			func(p []byte) ([]byte, error) { return Compute(ctx, p) }},
		{"std", stdTransform,
			func(p []byte) ([]byte, error) { return stdCompute(p, DefaultMaxRounds) }},
	}
	for _, fn := range []string{FnTransform, FnCompute} {
		for _, size := range benchSizes {
			body := payload(fn, size.n)
			for _, impl := range impls {
				call := impl.transform
				if fn == FnCompute {
					call = impl.compute
				}
				b.Run(fn+"/"+size.name+"/impl="+impl.name, func(b *testing.B) {
					b.ReportAllocs()
					b.SetBytes(int64(len(body)))
					for b.Loop() {
						if _, err := call(body); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}
