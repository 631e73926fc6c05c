package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/stacktest"
)

// BenchmarkPipelineFetch runs b.N fetches of /delay?ms=0 through the whole
// pipeline in this process (embedded NATS with its file store in a
// temporary directory, origin, two executors, target) with a WebSocket
// client: allocs/op and B/op are the whole process's per fetch (pipeline,
// NATS server and client together), cpu-µs/op its user+system CPU per fetch.
// Compare designs with -count and benchstat; on a shared machine CPU per
// fetch is the steadier figure.
//
//	go test -run '^$' -bench PipelineFetch -benchtime 20000x -count 5 ./loadgen/
func BenchmarkPipelineFetch(b *testing.B) {
	for _, c := range []struct {
		name        string
		concurrency int
	}{{"c1", 1}, {"c100", 100}} {
		b.Run(c.name, func(b *testing.B) {
			s := stacktest.Start(b, nil, zerolog.Nop())
			cfg := Config{
				Origins:        []string{s.OriginWS()},
				TargetURL:      s.TargetURL() + "/delay?ms=0",
				Concurrency:    c.concurrency,
				WarmupRequests: 200,
				Timeout:        30 * time.Second,
				Logger:         zerolog.Nop(),
			}
			cfg.Requests = max(b.N, 1)
			b.ReportAllocs()
			b.ResetTimer()
			rep, err := Run(context.Background(), cfg)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			if rep.OK != int64(cfg.Requests) {
				b.Fatalf("ok %d of %d: %v", rep.OK, cfg.Requests, rep.ErrorsByCode)
			}
			b.ReportMetric(rep.ProcessCPUPerFetchUS, "cpu-µs/op")
			b.ReportMetric(rep.ThroughputRPS, "fetches/s")
			b.ReportMetric(rep.LatencyMS.P50, "p50-ms")
		})
	}
}
