package runtime

import (
	"context"
	"testing"
)

// benchSizes are the payload sizes of the issue (PROTOCOL.md §5's loadgen rpc
// defaults).
var benchSizes = []struct {
	name string
	n    int
}{{"100B", 100}, {"1KB", 1 << 10}, {"10KB", 10 << 10}, {"100KB", 100 << 10}}

// BenchmarkFunction measures each function inline (no delegation).
func BenchmarkFunction(b *testing.B) {
	reg, ctx := NewRegistry(Limits{}), context.Background()
	for _, fn := range reg.Names() {
		for _, size := range benchSizes {
			body := payload(fn, size.n)
			b.Run(fn+"/"+size.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				for b.Loop() {
					if _, err := reg.Call(ctx, fn, body); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
