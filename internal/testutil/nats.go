package testutil

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
)

// This file imports broker, so broker's own tests cannot use this package.

// StartNATS starts an embedded NATS server with JetStream on a free
// 127.0.0.1 port, storing in t.TempDir(), and shuts it down at test end.
// Monitoring is off.
func StartNATS(t testing.TB) *broker.Server {
	t.Helper()
	srv, err := broker.NewServer(broker.ServerConfig{
		Port:        -1,
		MonitorPort: -2,
		StoreDir:    t.TempDir(),
		Logger:      zerolog.Nop(),
	})
	if err == nil {
		err = srv.Start(context.Background())
	}
	if err != nil {
		t.Fatalf("start nats: %v", err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv
}

// Connect opens a TCP connection to srv that is closed at test end (before
// the server stops, since cleanups run last-registered first).
func Connect(t testing.TB, srv *broker.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(srv.ClientURL(), append([]nats.Option{nats.Timeout(5 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("connect to nats %s: %v", srv.ClientURL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream is a JetStream context on its own connection to srv.
func JetStream(t testing.TB, srv *broker.Server) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(Connect(t, srv))
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return js
}

// Provision creates the pipeline's streams and consumers on srv with cfg.
func Provision(t testing.TB, js jetstream.JetStream, cfg broker.StreamsConfig) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := broker.Provision(ctx, js, cfg); err != nil {
		t.Fatalf("provision: %v", err)
	}
}

// ConnectVia is Connect over TCP loopback, or through an in-memory pipe
// (nats.InProcessServer) when inProcess is set.
func ConnectVia(t testing.TB, srv *broker.Server, inProcess bool) *nats.Conn {
	t.Helper()
	opts := []nats.Option{nats.Name(t.Name())}
	if inProcess {
		opts = append(opts, nats.InProcessServer(srv.NATS()))
	}
	return Connect(t, srv, opts...)
}

// JobsStored is the number of jobs in the jobs stream: its messages less
// its keepers (broker.KeepJobsBlock), which are not jobs.
func JobsStored(ctx context.Context, js jetstream.JetStream, s broker.Subjects) (uint64, error) {
	st, err := js.Stream(ctx, broker.JobsStream)
	if err != nil {
		return 0, fmt.Errorf("jobs stored: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(s.Job("*")))
	if err != nil {
		return 0, fmt.Errorf("jobs stored: %w", err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}
