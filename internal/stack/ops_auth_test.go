package stack

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/metrics"
	"github.com/pipeline-dev/pipeline/origin"
)

// TestReadinessUnderPerRoleUsers checks that the probes and the queue
// depth need no more than each role's NATS permissions: an origin user's
// /readyz is 200, and the admin (provisioner) connection reads the queue.
func TestReadinessUnderPerRoleUsers(t *testing.T) {
	auth := broker.AuthConfig{
		Enabled: true,
		Admin:   broker.Credentials{User: "admin", Password: "admin-pw"},
		Origins: map[string]broker.Credentials{"o1": {User: "origin-o1", Password: "o1-pw"}},
	}
	s := broker.Subjects{}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	users, err := auth.ServerUsers(s)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := broker.StartServer(broker.ServerConfig{Port: -1, MonitorPort: -2, StoreDir: t.TempDir(), Users: users, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown) // runs last
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	connect := func(role broker.Role, id string) *broker.ConnConfig {
		cc := broker.ConnConfig{URLs: srv.ClientURL(), Name: "pipeline " + string(role) + " " + id, Logger: log}
		if err := auth.Apply(&cc, role, id); err != nil {
			t.Fatal(err)
		}
		return &cc
	}
	admin, err := broker.Connect(ctx, *connect(broker.RoleAdmin, ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	ajs, _ := jetstream.New(admin)
	if err := broker.Provision(ctx, ajs, broker.StreamsConfig{Subjects: s, Memory: true}); err != nil {
		t.Fatalf("provision as admin: %v", err)
	}
	onc, err := broker.Connect(ctx, *connect(broker.RoleOrigin, "o1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(onc.Close)

	m := metrics.New()
	m.WatchQueue(ajs)
	o, err := origin.New(onc, origin.Config{ID: "o1", Listen: "127.0.0.1:0", Subjects: s, Metrics: m, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(ctx); err != nil {
		t.Fatalf("origin start as origin user: %v", err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		_ = o.Shutdown(sctx)
	})
	if code, body := getStatus(t, "http://"+o.Addr()+"/readyz"); code != http.StatusOK {
		t.Errorf("origin /readyz as origin user: %d %q, want 200", code, body)
	}
	rec := &strings.Builder{}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		rec.WriteString(mf.GetName() + "\n")
	}
	if !strings.Contains(rec.String(), "pipeline_jobs_queue_depth\n") {
		t.Errorf("no queue depth read through the admin connection; families:\n%s", rec.String())
	}
}
