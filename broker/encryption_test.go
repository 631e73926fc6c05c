package broker

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// TestStoreEncryptionAtRest: with a store key, a job's destination
// credentials are nowhere in the store's files (without one they are, in
// clear text), and a restart with the same key reads the job back.
func TestStoreEncryptionAtRest(t *testing.T) {
	const secret = "Bearer dest-secret-4711"
	for _, key := range []string{"", "at-rest-key"} {
		dir := t.TempDir()
		start := func() (*Server, jetstream.JetStream) {
			srv, err := NewServer(ServerConfig{Port: -1, MonitorPort: -2, StoreDir: dir, StoreKey: key,
				Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)})
			if err == nil {
				err = srv.Start(context.Background())
			}
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			nc, err := Connect(ctx, ConnConfig{InProcess: srv})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			return srv, newJS(t, nc)
		}
		srv, js := start()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := Provision(ctx, js, StreamsConfig{}); err != nil {
			t.Fatal(err)
		}
		job, _ := (&Job{ID: "j1", Origin: "o1", URL: "http://example.com/", Headers: map[string]string{"Authorization": secret}}).Encode()
		if _, err := js.Publish(ctx, Subjects{}.Job("o1"), job); err != nil {
			t.Fatal(err)
		}
		cancel()
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		found := false
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if b, rerr := os.ReadFile(p); rerr == nil && bytes.Contains(b, []byte(secret)) {
					found = true
				}
			}
			return nil
		})
		if key == "" && !found {
			t.Fatal("control: the secret is not in the unencrypted store; the search is broken")
		}
		if key != "" && found {
			t.Fatal("the secret is in the encrypted store in clear text")
		}
		srv, js = start()
		ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
		st, err := js.Stream(ctx, JobsStream)
		if err != nil || st.CachedInfo().State.Msgs != 1 {
			t.Fatalf("key %q: after restart: %v", key, err)
		}
		m, err := st.GetMsg(ctx, 1)
		if err != nil || !bytes.Contains(m.Data, []byte(secret)) {
			t.Fatalf("key %q: job after restart: %v", key, err)
		}
		cancel()
		_ = srv.Shutdown(context.Background())
	}
}
