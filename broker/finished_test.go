package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// TestFullFinishedStoreDropsTheOldest: a full finished-results bucket must
// take the result of a job finishing now (dropping the oldest entries)
// rather than refuse it, or restart recovery and get-result break for
// every new job.
func TestFullFinishedStoreDropsTheOldest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := NewServer(ServerConfig{Port: -1, MonitorPort: -2, StoreDir: t.TempDir(), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.Shutdown(context.Background()) }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	const maxBytes = 256 << 10
	if err := Provision(ctx, js, StreamsConfig{Storage: MemoryStorage, FinishedMaxBytes: maxBytes}); err != nil {
		t.Fatal(err)
	}
	// Provisioning again (every role does) keeps it so.
	if err := Provision(ctx, js, StreamsConfig{Storage: MemoryStorage, FinishedMaxBytes: maxBytes}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, FinishedBucket)
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("r"), 10<<10)
	const n = 100 // ~1 MB into a 256 KiB store
	for i := 0; i < n; i++ {
		if _, err := kv.Put(ctx, FinishedKey("o1", fmt.Sprintf("job%d", i)), body); err != nil {
			t.Fatalf("put %d into a full store: %v (want the oldest dropped instead)", i, err)
		}
	}
	if e, err := kv.Get(ctx, FinishedKey("o1", fmt.Sprintf("job%d", n-1))); err != nil || !bytes.Equal(e.Value(), body) {
		t.Fatalf("newest entry: %v, want it stored", err)
	}
	if _, err := kv.Get(ctx, FinishedKey("o1", "job0")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("oldest entry: err %v, want it dropped (key not found)", err)
	}
}
