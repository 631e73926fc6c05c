package origin_test

import (
	"context"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pipeline-dev/pipeline/internal/testutil"
	"github.com/pipeline-dev/pipeline/origin"
	"github.com/pipeline-dev/pipeline/runtime"
)

// benchSizes are the payload sizes of the issue (PROTOCOL.md §5's loadgen rpc
// defaults).
var benchSizes = []struct {
	name string
	n    int
}{{"100B", 100}, {"1KB", 1 << 10}, {"10KB", 10 << 10}, {"100KB", 100 << 10}}

// benchPath sets up one way of running a function and returns a Caller and
// the via to call it with.
type benchPath struct {
	name  string
	setup func(b *testing.B) (*origin.Caller, string)
}

var benchPaths = []benchPath{
	{"direct", func(b *testing.B) (*origin.Caller, string) {
		return origin.NewCaller(nil, origin.CallConfig{Functions: runtime.NewRegistry(runtime.Limits{})}), ViaDirect
	}},
	{"nats-inprocess", func(b *testing.B) (*origin.Caller, string) {
		ns := testutil.StartNATS(b)
		startService(b, testutil.ConnectVia(b, ns, true), nil)
		return origin.NewCaller(testutil.ConnectVia(b, ns, true), origin.CallConfig{}), ViaNATS
	}},
	{"nats-tcp", func(b *testing.B) (*origin.Caller, string) {
		ns := testutil.StartNATS(b)
		startService(b, testutil.ConnectVia(b, ns, false), nil)
		return origin.NewCaller(testutil.ConnectVia(b, ns, false), origin.CallConfig{}), ViaNATS
	}},
	{"http", func(b *testing.B) (*origin.Caller, string) {
		rt := startHTTP(b, nil)
		return origin.NewCaller(nil, origin.CallConfig{RuntimeHTTP: rt.URL()}), ViaHTTP
	}},
}

// BenchmarkDelegation measures one call at a time through Caller.Call for
// every path × function × payload size: direct (inline), NATS request-reply
// through an in-process connection (both sides in the server's process),
// NATS over TCP loopback, and HTTP over TCP loopback. Besides ns/op it
// reports the p50 and p99 latency in microseconds from an HDR histogram.
func BenchmarkDelegation(b *testing.B) {
	for _, path := range benchPaths {
		b.Run(path.name, func(b *testing.B) {
			caller, via := path.setup(b)
			b.Cleanup(caller.Close)
			ctx := context.Background()
			for _, fn := range []string{runtime.FnEcho, runtime.FnTransform, runtime.FnCompute} {
				for _, size := range benchSizes {
					body := testutil.RPCPayload(fn, size.n)
					b.Run(fn+"/"+size.name, func(b *testing.B) {
						h := hdrhistogram.New(1, int64(10*time.Second), 3)
						// Warm up connections and pools outside the measurement.
						for range 100 {
							if _, err := caller.Call(ctx, via, fn, body); err != nil {
								b.Fatal(err)
							}
						}
						b.ReportAllocs()
						b.SetBytes(int64(len(body)))
						for b.Loop() {
							start := time.Now()
							if _, err := caller.Call(ctx, via, fn, body); err != nil {
								b.Fatal(err)
							}
							_ = h.RecordValue(int64(time.Since(start)))
						}
						b.ReportMetric(float64(h.ValueAtQuantile(50))/1e3, "p50-us")
						b.ReportMetric(float64(h.ValueAtQuantile(99))/1e3, "p99-us")
					})
				}
			}
		})
	}
}

// BenchmarkDelegationParallel measures throughput with many concurrent
// callers (b.RunParallel, 8 goroutines per core), showing that one runtime
// instance uses every core.
func BenchmarkDelegationParallel(b *testing.B) {
	for _, path := range benchPaths {
		b.Run(path.name, func(b *testing.B) {
			caller, via := path.setup(b)
			b.Cleanup(caller.Close)
			ctx := context.Background()
			for _, tc := range []struct {
				fn   string
				size int
				name string
			}{{runtime.FnEcho, 1 << 10, "echo/1KB"}, {runtime.FnTransform, 10 << 10, "transform/10KB"}} {
				body := testutil.RPCPayload(tc.fn, tc.size)
				b.Run(tc.name, func(b *testing.B) {
					b.ReportAllocs()
					b.SetBytes(int64(len(body)))
					b.SetParallelism(8)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := caller.Call(ctx, via, tc.fn, body); err != nil {
								b.Error(err)
								return
							}
						}
					})
				})
			}
		})
	}
}
