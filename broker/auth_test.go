package broker

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
)

// testAuth has a user for every role and two origins.
func testAuth() AuthConfig {
	return AuthConfig{
		Enabled:  true,
		Admin:    Credentials{User: "admin", Password: "admin-secret"},
		Executor: Credentials{User: "executor", Password: "executor-secret"},
		Runtime:  Credentials{User: "runtime", Password: "runtime-secret"},
		Caller:   Credentials{User: "caller", Password: "caller-secret"},
		Origins: map[string]Credentials{
			"o1": {User: "origin-o1", Password: "o1-secret"},
			"o2": {User: "origin-o2", Password: "o2-secret"},
		},
	}
}

// startAuthServer starts an embedded JetStream server with auth's users on a
// free port and stops it at test end.
func startAuthServer(t *testing.T, auth AuthConfig, tls *TLSFiles) *Server {
	t.Helper()
	users, accounts, err := auth.ServerAccounts(Subjects{})
	if err != nil {
		t.Fatalf("server accounts: %v", err)
	}
	srv, err := NewServer(ServerConfig{
		Port:        -1,
		MonitorPort: -2,
		StoreDir:    t.TempDir(),
		Users:       users,
		Accounts:    accounts,
		TLS:         tls,
		Logger:      zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err == nil {
		err = srv.Start(context.Background())
	}
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return srv
}

// connectAs connects to srv over TCP as role (origin: originID).
func connectAs(t *testing.T, srv *Server, auth AuthConfig, role Role, originID string) *nats.Conn {
	t.Helper()
	cc := ConnConfig{URLs: srv.ClientURL(), Name: "test " + string(role) + " " + originID}
	if err := auth.Apply(&cc, role, originID); err != nil {
		t.Fatalf("apply %s: %v", role, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, err := Connect(ctx, cc)
	if err != nil {
		t.Fatalf("connect as %s %s: %v", role, originID, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func newJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// pipelineJS is an origin's view of the pipeline account's JetStream API:
// what its account imports under PipelineAPIPrefix.
func pipelineJS(t *testing.T, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.NewWithAPIPrefix(nc, PipelineAPIPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// provisionAsAdmin creates the streams and consumers through an in-process
// admin connection (in-process connections authenticate too).
func provisionAsAdmin(t *testing.T, srv *Server, auth AuthConfig) {
	t.Helper()
	cc := ConnConfig{InProcess: srv, Name: "test provisioner"}
	if err := auth.Apply(&cc, RoleAdmin, ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := Connect(ctx, cc)
	if err != nil {
		t.Fatalf("connect admin in-process: %v", err)
	}
	defer nc.Close()
	if err := Provision(ctx, newJS(t, nc), StreamsConfig{Storage: MemoryStorage, Tenants: auth.OriginIDs()}); err != nil {
		t.Fatalf("provision as admin: %v", err)
	}
	if err := nc.LastError(); err != nil {
		t.Fatalf("admin connection error: %v", err)
	}
}

// wantViolation waits for the server to report a permissions violation on
// subject to nc. A subject ending in '.' matches as a prefix (for subjects
// with generated names in them).
func wantViolation(t *testing.T, nc *nats.Conn, subject string) {
	t.Helper()
	quoted := `"` + subject
	if !strings.HasSuffix(subject, ".") {
		quoted += `"`
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := nc.LastError()
		if err != nil && errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), quoted) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("got last error %v, want a permissions violation for %q", err, subject)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// noViolation fails when nc has seen any error.
func noViolation(t *testing.T, nc *nats.Conn, who string) {
	t.Helper()
	if err := nc.LastError(); err != nil {
		t.Errorf("%s: got error %v, want none", who, err)
	}
}

func TestAuthAllowedOperationsPerRole(t *testing.T) {
	auth := testAuth()
	srv := startAuthServer(t, auth, nil)
	provisionAsAdmin(t, srv, auth)
	s := Subjects{}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Origins bind their results consumers (provisioned by the admin)
	// through their imports, and enqueue jobs.
	o1 := connectAs(t, srv, auth, RoleOrigin, "o1")
	o2 := connectAs(t, srv, auth, RoleOrigin, "o2")
	o1js := newJS(t, o1)
	o1cons, err := pipelineJS(t, o1).Consumer(ctx, ResultsStream, OriginConsumer("o1"))
	if err != nil {
		t.Fatalf("o1 binds origin-o1: %v", err)
	}
	if _, err := o1cons.Info(ctx); err != nil {
		t.Fatalf("o1 consumer info: %v", err)
	}
	o2cons, err := pipelineJS(t, o2).Consumer(ctx, ResultsStream, OriginConsumer("o2"))
	if err != nil {
		t.Fatalf("o2 binds origin-o2: %v", err)
	}
	// Its own delayed-jobs stream, in its own account.
	if err := ProvisionDelayed(ctx, o1js, StreamsConfig{Storage: MemoryStorage}); err != nil {
		t.Fatalf("o1 creates its delayed stream: %v", err)
	}
	job := &Job{ID: "job-1", Origin: "o1", URL: "http://example.com/"}
	data, _ := job.Encode()
	if _, err := o1js.Publish(ctx, s.Job("o1"), data, jetstream.WithMsgID(job.ID)); err != nil {
		t.Fatalf("o1 publishes its job: %v", err)
	}
	fut, err := o1js.PublishAsync(s.Job("o1"), data, jetstream.WithMsgID("job-async"))
	if err != nil {
		t.Fatalf("o1 publishes async: %v", err)
	}
	select {
	case <-fut.Ok():
	case err := <-fut.Err():
		t.Fatalf("o1 async pub ack: %v", err)
	case <-ctx.Done():
		t.Fatal("o1 async pub ack: timeout")
	}

	// The executor creates the origin's jobs consumer from the template (an
	// origin in its own account cannot; with accounts the admin provisions
	// it), binds it, signals progress, stores the result and acks:
	// InProgress then Ack needs the explicit $JS.ACK grant.
	ex := connectAs(t, srv, auth, RoleExecutor, "")
	exjs := newJS(t, ex)
	cons, err := EnsureJobsConsumer(ctx, exjs, s, "o1")
	if err != nil {
		t.Fatalf("executor binds %s: %v", JobsConsumer("o1"), err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("executor fetch: %v", err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if err := batch.Error(); err != nil || len(got) != 1 {
		t.Fatalf("executor fetched %d jobs (err %v), want 1", len(got), err)
	}
	if err := got[0].InProgress(); err != nil {
		t.Fatalf("executor in-progress: %v", err)
	}
	for _, origin := range []string{"o1", "o2"} {
		res := Result{JobID: "job-1-" + origin, Origin: origin, Status: 200}
		rd, _ := res.Encode()
		if _, err := exjs.Publish(ctx, s.Result(origin), rd, jetstream.WithMsgID(res.JobID)); err != nil {
			t.Fatalf("executor publishes result for %s: %v", origin, err)
		}
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatalf("executor ack after in-progress: %v", err)
	}

	// Dead-letter processing: bind the dead-letter consumer, pull from it,
	// move the second job (stream get, dlq publish, stream delete).
	dl, err := exjs.Consumer(ctx, AdvisoriesStream, DeadLetterConsumer)
	if err != nil {
		t.Fatalf("executor binds %s: %v", DeadLetterConsumer, err)
	}
	if _, err := dl.FetchNoWait(1); err != nil {
		t.Fatalf("executor pulls dead letters: %v", err)
	}
	jobs, err := exjs.Stream(ctx, JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := jobs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moved, err := MoveToDeadLetter(ctx, exjs, s, MaxDeliveriesAdvisory{Stream: JobsStream, Consumer: JobsConsumer("o1"), StreamSeq: info.State.LastSeq, Deliveries: 5})
	if err != nil || moved == nil {
		t.Fatalf("executor moves a dead job: job %v, err %v", moved, err)
	}

	// Each origin reads exactly its own result.
	for _, oc := range []struct {
		id   string
		cons jetstream.Consumer
	}{{"o1", o1cons}, {"o2", o2cons}} {
		b, err := oc.cons.Fetch(2, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatalf("%s fetch: %v", oc.id, err)
		}
		var ids []string
		for m := range b.Messages() {
			r, err := DecodeResult(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, r.JobID)
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatalf("%s acks its result: %v", oc.id, err)
			}
		}
		if want := []string{"job-1-" + oc.id}; !slices.Equal(ids, want) {
			t.Errorf("%s read results %v, want %v", oc.id, ids, want)
		}
	}

	// The results stay after their origin acked them: they are the jobs'
	// finished records. o1 direct-gets its own through its import (the
	// plain-subject result under LegacyResultToken, a result on its job's
	// subject), a missing one is a 404, and it stores a record of its own
	// (a canceled job's) on its own job subject.
	if _, err := exjs.Publish(ctx, s.ResultOf("o1", "done-1"), []byte(`{"job":"done-1"}`)); err != nil {
		t.Fatalf("executor publishes o1's done-1: %v", err)
	}
	if _, err := exjs.Publish(ctx, s.ResultOf("o2", "done-1"), []byte(`{"job":"o2's done-1"}`)); err != nil {
		t.Fatalf("executor publishes o2's done-1: %v", err)
	}
	directGet := func(subject string) *nats.Msg {
		t.Helper()
		m, err := o1.Request(PipelineAPIPrefix+".DIRECT.GET."+ResultsStream+"."+subject, nil, 2*time.Second)
		if err != nil {
			t.Fatalf("o1 direct-gets %s: %v", subject, err)
		}
		return m
	}
	if m := directGet(s.ResultOf("o1", "done-1")); string(m.Data) != `{"job":"done-1"}` || m.Header.Get("Nats-Subject") != s.ResultOf("o1", "done-1") {
		t.Fatalf("o1 direct-gets done-1: status %q subject %q data %q", m.Header.Get("Status"), m.Header.Get("Nats-Subject"), m.Data)
	}
	if m := directGet(s.ResultOf("o1", LegacyResultToken)); m.Header.Get("Status") != "" {
		t.Fatalf("o1 direct-gets its acked plain-subject result: status %q %s", m.Header.Get("Status"), m.Header.Get("Description"))
	} else if r, err := DecodeResult(m.Data); err != nil || r.JobID != "job-1-o1" {
		t.Fatalf("o1 direct-gets its acked plain-subject result: %+v, %v; want job-1-o1", r, err)
	}
	if m := directGet(s.ResultOf("o1", "never")); m.Header.Get("Status") != "404" || len(m.Data) != 0 {
		t.Fatalf("o1 direct-gets a missing result: status %q data %q, want 404", m.Header.Get("Status"), m.Data)
	}
	if ack, err := o1js.Publish(ctx, s.ResultOf("o1", "x"), []byte(`{"job":"x","canceled":true}`)); err != nil || ack.Stream != ResultsStream {
		t.Fatalf("o1 stores a record on its own results subject: ack %+v, err %v", ack, err)
	}
	if m := directGet(s.ResultOf("o1", "x")); string(m.Data) != `{"job":"x","canceled":true}` {
		t.Fatalf("o1 reads back its own record: status %q data %q", m.Header.Get("Status"), m.Data)
	}

	// The runtime serves in its queue group and replies to inbox subjects
	// only; origins and callers call it through their imports; the admin can
	// discover it.
	rt := connectAs(t, srv, auth, RoleRuntime, "")
	svc, err := micro.AddService(rt, micro.Config{Name: "runtime", Version: "0.1.0", QueueGroup: "runtime"})
	if err != nil {
		t.Fatalf("runtime adds micro service: %v", err)
	}
	defer func() { _ = svc.Stop() }()
	if err := svc.AddGroup(s.RPCGroup()).AddEndpoint("echo", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })); err != nil {
		t.Fatalf("runtime adds endpoint: %v", err)
	}
	if err := rt.Flush(); err != nil { // the endpoint subscriptions reached the server
		t.Fatal(err)
	}
	caller := connectAs(t, srv, auth, RoleCaller, "")
	for name, nc := range map[string]*nats.Conn{"origin o1": o1, "caller": caller} {
		msg, err := nc.Request(s.RPCGroup()+".echo", []byte("hi "+name), 2*time.Second)
		if err != nil || string(msg.Data) != "hi "+name {
			t.Fatalf("%s calls echo: reply %v, err %v", name, msg, err)
		}
	}
	admin := connectAs(t, srv, auth, RoleAdmin, "")
	if msg, err := admin.Request("$SRV.PING.runtime", nil, 2*time.Second); err != nil || !bytes.Contains(msg.Data, []byte(`"runtime"`)) {
		t.Fatalf("admin pings the runtime: reply %v, err %v", msg, err)
	}

	for name, nc := range map[string]*nats.Conn{"o1": o1, "o2": o2, "executor": ex, "runtime": rt, "caller": caller, "admin": admin} {
		noViolation(t, nc, name)
	}
}

func TestAuthForbiddenOperationsAreRefused(t *testing.T) {
	auth := testAuth()
	srv := startAuthServer(t, auth, nil)
	provisionAsAdmin(t, srv, auth)
	s := Subjects{}
	// o2's consumer exists (provisioned) and holds a result, so every
	// refusal below is a permission refusal, not a "not found".
	{
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ex := connectAs(t, srv, auth, RoleExecutor, "")
		res := Result{JobID: "secret", Origin: "o2", Status: 200, Body: []byte("o2's secret")}
		rd, _ := res.Encode()
		if _, err := newJS(t, ex).Publish(ctx, s.Result("o2"), rd); err != nil {
			t.Fatal(err)
		}
		// And a finished record on its job's subject, for the direct gets.
		if _, err := newJS(t, ex).Publish(ctx, s.ResultOf("o2", "secret"), rd); err != nil {
			t.Fatal(err)
		}
	}
	jobData, _ := (&Job{ID: "forged", Origin: "o1", URL: "http://example.com/"}).Encode()
	resData, _ := (&Result{JobID: "forged", Origin: "o2", Status: 200}).Encode()

	type op func(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error
	cases := []struct {
		name    string
		role    Role
		origin  string
		op      op
		subject string // the refused subject
	}{
		{"executor publishes a job", RoleExecutor, "", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, s.Job("o1"), jobData)
			return err
		}, s.Job("o1")},
		{"executor subscribes to results", RoleExecutor, "", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater(nc.SubscribeSync(s.Result("o2")))
		}, s.Result("o2")},
		{"executor creates a consumer on jobs", RoleExecutor, "", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.CreateOrUpdateConsumer(ctx, JobsStream, jetstream.ConsumerConfig{Durable: "rogue", AckPolicy: jetstream.AckExplicitPolicy})
			return err
		}, "$JS.API.CONSUMER.CREATE.PIPELINE_JOBS.rogue"},
		{"executor deletes the jobs stream", RoleExecutor, "", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			return js.DeleteStream(ctx, JobsStream)
		}, "$JS.API.STREAM.DELETE.PIPELINE_JOBS"},
		{"origin o1 subscribes to o2's results", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater(nc.SubscribeSync(s.Result("o2")))
		}, s.Result("o2")},
		{"origin o1 subscribes to all results", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater(nc.SubscribeSync(s.ResultsWildcard()))
		}, s.ResultsWildcard()},
		{"origin o1 subscribes to o2's inbox", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater(nc.SubscribeSync(InboxPrefix(RoleOrigin, "o2") + ".>"))
		}, InboxPrefix(RoleOrigin, "o2") + ".>"},
		{"origin o1 creates consumer origin-o2", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.CreateOrUpdateConsumer(ctx, ResultsStream, originConsumerConfig(s, "o2"))
			return err
		}, "$JS.API.CONSUMER.CREATE.PIPELINE_RESULTS.origin-o2." + s.ResultsFilter("o2")},
		{"origin o1 points its consumer at o2's results", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			cfg := originConsumerConfig(s, "o1")
			cfg.FilterSubject = s.Result("o2")
			_, err := js.CreateOrUpdateConsumer(ctx, ResultsStream, cfg)
			return err
		}, "$JS.API.CONSUMER.CREATE.PIPELINE_RESULTS.origin-o1.pipeline.results.o2"},
		{"origin o1 creates an unfiltered consumer", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			cfg := originConsumerConfig(s, "o1")
			cfg.FilterSubject = ""
			_, err := js.CreateOrUpdateConsumer(ctx, ResultsStream, cfg)
			return err
		}, "$JS.API.CONSUMER.CREATE.PIPELINE_RESULTS.origin-o1"},
		{"origin o1 creates o2's jobs consumer", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := EnsureJobsConsumer(ctx, js, s, "o2")
			return err
		}, "$JS.API.STREAM.INFO.PIPELINE_JOBS"}, // refused at its first step: origins create no consumers
		{"origin o1 points its jobs consumer at o2's jobs", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			cfg := JobsTemplate{AckWait: time.Second, MaxDeliver: 1}.Config(s, "o1")
			cfg.FilterSubject = s.Job("o2")
			_, err := js.CreateOrUpdateConsumer(ctx, JobsStream, cfg)
			return err
		}, "$JS.API.CONSUMER.CREATE.PIPELINE_JOBS.jobs-o1.pipeline.jobs.fetch.o2"},
		{"origin o1 binds consumer origin-o2", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Consumer(ctx, ResultsStream, OriginConsumer("o2"))
			return err
		}, "$JS.API.CONSUMER.INFO.PIPELINE_RESULTS.origin-o2"},
		{"origin o1 pulls from origin-o2", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request("$JS.API.CONSUMER.MSG.NEXT.PIPELINE_RESULTS.origin-o2", []byte(`{"batch":1,"no_wait":true}`), 500*time.Millisecond)
			return err
		}, "$JS.API.CONSUMER.MSG.NEXT.PIPELINE_RESULTS.origin-o2"},
		{"origin o1 reads a results message by sequence", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request("$JS.API.STREAM.MSG.GET.PIPELINE_RESULTS", []byte(`{"seq":1}`), 500*time.Millisecond)
			return err
		}, "$JS.API.STREAM.MSG.GET.PIPELINE_RESULTS"},
		{"origin o1 direct-gets o2's last result", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request("$JS.API.DIRECT.GET.PIPELINE_RESULTS.pipeline.results.o2", nil, 500*time.Millisecond)
			return err
		}, "$JS.API.DIRECT.GET.PIPELINE_RESULTS.pipeline.results.o2"},
		{"origin o1 acks o2's results", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater[any](nil, nc.Publish("$JS.ACK.PIPELINE_RESULTS.origin-o2.1.1.1.1.0", []byte("+ACK")))
		}, "$JS.ACK.PIPELINE_RESULTS.origin-o2.1.1.1.1.0"},
		{"origin o1 forges a result for o2", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, s.Result("o2"), resData)
			return err
		}, s.Result("o2")},
		{"origin o1 publishes to its own plain results subject", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, s.Result("o1"), resData)
			return err
		}, s.Result("o1")},
		{"origin o1 publishes a job as o2", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, s.Job("o2"), jobData)
			return err
		}, s.Job("o2")},
		{"origin o1 stores a record on o2's job subject", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, s.ResultOf("o2", "x"), resData)
			return err
		}, s.ResultOf("o2", "x")},
		{"origin o1 stores a record on o2's job subject, asynchronously", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater[any](nil, nc.Publish(s.ResultOf("o2", "y"), resData))
		}, s.ResultOf("o2", "y")},
		{"origin o1 direct-gets o2's record through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".DIRECT.GET.PIPELINE_RESULTS."+s.ResultOf("o2", "secret"), nil, 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".DIRECT.GET.PIPELINE_RESULTS." + s.ResultOf("o2", "secret")},
		{"origin o1 direct-gets o2's record through the JetStream API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request("$JS.API.DIRECT.GET.PIPELINE_RESULTS."+s.ResultOf("o2", "secret"), nil, 500*time.Millisecond)
			return err
		}, "$JS.API.DIRECT.GET.PIPELINE_RESULTS." + s.ResultOf("o2", "secret")},
		{"origin o1 direct-gets o2's records by wildcard through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".DIRECT.GET.PIPELINE_RESULTS."+s.ResultOf("o2", "*"), nil, 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".DIRECT.GET.PIPELINE_RESULTS." + s.ResultOf("o2", "*")},
		{"origin o1 direct-gets every record through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".DIRECT.GET.PIPELINE_RESULTS."+s.ResultsWildcard(), nil, 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".DIRECT.GET.PIPELINE_RESULTS." + s.ResultsWildcard()},
		{"origin o1 direct-gets a record two tokens below its own", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".DIRECT.GET.PIPELINE_RESULTS."+s.ResultOf("o1", "x.o2"), nil, 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".DIRECT.GET.PIPELINE_RESULTS." + s.ResultOf("o1", "x.o2")},
		{"origin o1 direct-gets by sequence through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".DIRECT.GET.PIPELINE_RESULTS", []byte(`{"seq":1}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".DIRECT.GET.PIPELINE_RESULTS"},
		{"origin o1 direct-gets o2's last record by body through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".DIRECT.GET.PIPELINE_RESULTS", []byte(`{"last_by_subj":"`+s.ResultOf("o2", "secret")+`"}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".DIRECT.GET.PIPELINE_RESULTS"},
		{"origin o1 direct-gets o2's last records in one batch through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".DIRECT.GET.PIPELINE_RESULTS", []byte(`{"multi_last":["`+s.ResultOf("o2", "*")+`"]}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".DIRECT.GET.PIPELINE_RESULTS"},
		{"origin o1 direct-gets by sequence through the JetStream API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request("$JS.API.DIRECT.GET.PIPELINE_RESULTS", []byte(`{"seq":1}`), 500*time.Millisecond)
			return err
		}, "$JS.API.DIRECT.GET.PIPELINE_RESULTS"},
		{"origin o1 direct-gets o2's last records in one batch through the JetStream API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request("$JS.API.DIRECT.GET.PIPELINE_RESULTS", []byte(`{"multi_last":["`+s.ResultsWildcard()+`"]}`), 500*time.Millisecond)
			return err
		}, "$JS.API.DIRECT.GET.PIPELINE_RESULTS"},
		{"origin o1 lists the results stream's subjects through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".STREAM.INFO.PIPELINE_RESULTS", []byte(`{"subjects_filter":">"}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".STREAM.INFO.PIPELINE_RESULTS"},
		{"origin o1 lists the results stream's subjects through the JetStream API", RoleOrigin, "o1", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Stream(ctx, ResultsStream)
			return err
		}, "$JS.API.STREAM.INFO.PIPELINE_RESULTS"},
		{"origin o1 reads a results message by sequence through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".STREAM.MSG.GET.PIPELINE_RESULTS", []byte(`{"seq":1}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".STREAM.MSG.GET.PIPELINE_RESULTS"},
		{"origin o1 creates a consumer on the results stream through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".CONSUMER.CREATE.PIPELINE_RESULTS", []byte(`{"stream_name":"PIPELINE_RESULTS","config":{"ack_policy":"none","deliver_subject":"_INBOX.origin.o1.loot"}}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".CONSUMER.CREATE.PIPELINE_RESULTS"},
		{"origin o1 deletes a record by sequence through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".STREAM.MSG.DELETE.PIPELINE_RESULTS", []byte(`{"seq":1,"no_erase":true}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".STREAM.MSG.DELETE.PIPELINE_RESULTS"},
		{"origin o1 deletes a record by sequence through the JetStream API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request("$JS.API.STREAM.MSG.DELETE.PIPELINE_RESULTS", []byte(`{"seq":1,"no_erase":true}`), 500*time.Millisecond)
			return err
		}, "$JS.API.STREAM.MSG.DELETE.PIPELINE_RESULTS"},
		{"origin o1 purges o2's records through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".STREAM.PURGE.PIPELINE_RESULTS", []byte(`{"filter":"`+s.ResultOf("o2", "*")+`"}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".STREAM.PURGE.PIPELINE_RESULTS"},
		{"origin o1 deletes the results stream through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".STREAM.DELETE.PIPELINE_RESULTS", nil, 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".STREAM.DELETE.PIPELINE_RESULTS"},
		{"origin o1 deletes o2's consumer through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".CONSUMER.DELETE.PIPELINE_RESULTS.origin-o2", nil, 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".CONSUMER.DELETE.PIPELINE_RESULTS.origin-o2"},
		{"origin o1 binds o2's consumer through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".CONSUMER.INFO.PIPELINE_RESULTS.origin-o2", nil, 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".CONSUMER.INFO.PIPELINE_RESULTS.origin-o2"},
		{"origin o1 pulls o2's results through the imported API", RoleOrigin, "o1", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			_, err := nc.Request(PipelineAPIPrefix+".CONSUMER.MSG.NEXT.PIPELINE_RESULTS.origin-o2", []byte(`{"batch":1,"no_wait":true}`), 500*time.Millisecond)
			return err
		}, PipelineAPIPrefix + ".CONSUMER.MSG.NEXT.PIPELINE_RESULTS.origin-o2"},
		{"runtime publishes a job", RoleRuntime, "", func(ctx context.Context, _ *nats.Conn, js jetstream.JetStream) error {
			_, err := js.Publish(ctx, s.Job("o1"), jobData)
			return err
		}, s.Job("o1")},
		{"runtime subscribes to rpc outside its queue group", RoleRuntime, "", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater(nc.SubscribeSync(s.RPCGroup() + ".echo"))
		}, s.RPCGroup() + ".echo"},
		{"runtime publishes a result", RoleRuntime, "", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater[any](nil, nc.Publish(s.Result("o1"), resData))
		}, s.Result("o1")},
		{"runtime publishes to the JetStream API", RoleRuntime, "", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater[any](nil, nc.Publish("$JS.API.STREAM.DELETE.PIPELINE_JOBS", nil))
		}, "$JS.API.STREAM.DELETE.PIPELINE_JOBS"},
		{"caller publishes a job", RoleCaller, "", func(_ context.Context, nc *nats.Conn, _ jetstream.JetStream) error {
			return refusedLater[any](nil, nc.Publish(s.Job("o1"), jobData))
		}, s.Job("o1")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc := connectAs(t, srv, auth, tc.role, tc.origin)
			ctx, cancel := context.WithTimeout(context.Background(), 750*time.Millisecond)
			defer cancel()
			err := tc.op(ctx, nc, newJS(t, nc))
			_ = nc.Flush() // let a refused publish or subscription reach the server
			wantViolation(t, nc, tc.subject)
			// A refused request gets no reply, so the call itself fails too;
			// plain publishes and subscriptions are refused asynchronously.
			if err == nil {
				t.Errorf("operation succeeded, want an error")
			} else if !errors.Is(err, errRefusedLater) {
				t.Logf("operation failed as expected: %v", err)
			}
		})
	}

	// Nothing above consumed o2's result: o2 still reads it.
	t.Run("o2 still has its result", func(t *testing.T) {
		o2 := connectAs(t, srv, auth, RoleOrigin, "o2")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := pipelineJS(t, o2).Consumer(ctx, ResultsStream, OriginConsumer("o2"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatalf("o2 next: %v", err)
		}
		if md, _ := m.Metadata(); md == nil || md.NumDelivered != 1 {
			t.Errorf("o2's result metadata %+v, want first delivery", md)
		}
	})
}

// originConsumerConfig is the results consumer config an origin creates.
func originConsumerConfig(s Subjects, originID string) jetstream.ConsumerConfig {
	return OriginConsumerConfig(s, originID, 1, 0)
}

// errRefusedLater stands for the result of a publish or subscription, which
// the server refuses asynchronously (the violation arrives on the connection).
var errRefusedLater = errors.New("refused asynchronously")

// refusedLater returns err, or errRefusedLater when err is nil.
func refusedLater[T any](_ T, err error) error {
	if err != nil {
		return err
	}
	return errRefusedLater
}

// TestAuthRejectsBadCredentials checks TCP connections. (An in-process
// connection with bad credentials fails too, but only after the server's
// 10 s write deadline on the pipe, with "read/write on closed pipe".)
func TestAuthRejectsBadCredentials(t *testing.T) {
	auth := testAuth()
	srv := startAuthServer(t, auth, nil)
	for name, cc := range map[string]ConnConfig{
		"no credentials": {URLs: srv.ClientURL()},
		"wrong password": {URLs: srv.ClientURL(), User: "executor", Password: "o1-secret"},
		"unknown user":   {URLs: srv.ClientURL(), User: "mallory", Password: "x"},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			nc, err := Connect(ctx, cc)
			if err == nil {
				nc.Close()
				t.Fatal("connected, want an authorization error")
			}
			if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
				t.Fatalf("got %v, want an authorization violation", err)
			}
		})
	}
}

func TestAuthConfigValidation(t *testing.T) {
	t.Setenv("PIPELINE_TEST_EXEC_PW", "from-env")
	cases := []struct {
		name string
		mod  func(*AuthConfig)
		ok   bool
	}{
		{"complete", func(*AuthConfig) {}, true},
		{"password from env", func(a *AuthConfig) { a.Executor = Credentials{User: "executor", PasswordEnv: "PIPELINE_TEST_EXEC_PW"} }, true},
		{"unset env", func(a *AuthConfig) { a.Executor = Credentials{User: "executor", PasswordEnv: "PIPELINE_TEST_UNSET_PW"} }, false},
		{"no password", func(a *AuthConfig) { a.Runtime.Password = "" }, false},
		{"no user", func(a *AuthConfig) { a.Runtime.User = "" }, false},
		{"duplicate user", func(a *AuthConfig) { a.Origins["o2"] = Credentials{User: "origin-o1", Password: "x"} }, false},
		{"bad origin id", func(a *AuthConfig) { a.Origins["o.>"] = Credentials{User: "evil", Password: "x"} }, false},
		{"optional role left out", func(a *AuthConfig) { a.Caller = Credentials{} }, true},
		{"nobody", func(a *AuthConfig) { *a = AuthConfig{Enabled: true} }, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := testAuth()
			tc.mod(&a)
			users, _, err := a.ServerAccounts(Subjects{})
			if tc.ok != (err == nil) {
				t.Fatalf("ServerAccounts: got err %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrAuthConfig) {
				t.Errorf("got %v, want ErrAuthConfig", err)
			}
			if tc.ok && len(users) == 0 {
				t.Error("no users")
			}
		})
	}
	t.Run("env password reaches server and client", func(t *testing.T) {
		a := testAuth()
		a.Executor = Credentials{User: "executor", PasswordEnv: "PIPELINE_TEST_EXEC_PW"}
		users, _, _ := a.ServerAccounts(Subjects{})
		var cc ConnConfig
		if err := a.Apply(&cc, RoleExecutor, ""); err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			if u.Username == "executor" && u.Password != "from-env" {
				t.Errorf("server password %q, want from-env", u.Password)
			}
		}
		if cc.User != "executor" || cc.Password != "from-env" || cc.InboxPrefix != "_INBOX.executor" {
			t.Errorf("conn config %+v", cc)
		}
	})
	t.Run("apply", func(t *testing.T) {
		a := testAuth()
		var cc ConnConfig
		if err := a.Apply(&cc, RoleOrigin, "o2"); err != nil || cc.User != "origin-o2" || cc.InboxPrefix != "_INBOX.origin.o2" {
			t.Errorf("apply origin o2: %+v, %v", cc, err)
		}
		if err := a.Apply(&cc, RoleOrigin, "o3"); !errors.Is(err, ErrAuthConfig) {
			t.Errorf("apply unknown origin: got %v, want ErrAuthConfig", err)
		}
		if err := a.Apply(&cc, Role("god"), ""); !errors.Is(err, ErrAuthConfig) {
			t.Errorf("apply unknown role: got %v, want ErrAuthConfig", err)
		}
		a.Admin.Password = "$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG"
		if err := a.Apply(&cc, RoleAdmin, ""); !errors.Is(err, ErrAuthConfig) {
			t.Errorf("apply bcrypt password: got %v, want ErrAuthConfig", err)
		}
		var untouched ConnConfig
		if err := (AuthConfig{}).Apply(&untouched, RoleAdmin, ""); err != nil || untouched.User != "" || untouched.Password != "" || untouched.InboxPrefix != "" {
			t.Errorf("disabled auth changed the conn config: %+v, %v", untouched, err)
		}
	})
}

func TestAuthCredentialsNeverPrintThePassword(t *testing.T) {
	a := testAuth()
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	log.Info().Object("executor", a.Executor).Msg("x")
	for _, s := range []string{
		fmt.Sprintf("%v", a), fmt.Sprintf("%+v", a), fmt.Sprintf("%#v", a),
		fmt.Sprint(a.Origins), a.Executor.String(), buf.String(),
	} {
		for _, secret := range []string{"admin-secret", "executor-secret", "o1-secret"} {
			if strings.Contains(s, secret) {
				t.Errorf("%q contains the password %q", s, secret)
			}
		}
	}
	if !strings.Contains(a.Executor.String(), "executor") {
		t.Errorf("String() = %q, want the user name", a.Executor.String())
	}
}

// TestAuthOverMutualTLS runs the roles' connections over TLS with client
// certificates; in-process connections need none.
func TestAuthOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	pki := writeTestPKI(t, dir)
	auth := testAuth()
	srv := startAuthServer(t, auth, &TLSFiles{CAFile: pki.ca, CertFile: pki.serverCert, KeyFile: pki.serverKey})
	provisionAsAdmin(t, srv, auth) // in-process, no TLS

	connect := func(tlsFiles *TLSFiles) (*nats.Conn, error) {
		cc := ConnConfig{URLs: srv.ClientURL(), TLS: tlsFiles}
		if err := auth.Apply(&cc, RoleOrigin, "o1"); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return Connect(ctx, cc)
	}
	nc, err := connect(&TLSFiles{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey})
	if err != nil {
		t.Fatalf("connect with client certificate: %v", err)
	}
	defer nc.Close()
	if !nc.TLSRequired() {
		t.Error("connection is not TLS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pipelineJS(t, nc).Consumer(ctx, ResultsStream, OriginConsumer("o1")); err != nil {
		t.Fatalf("origin over TLS: %v", err)
	}
	if nc, err := connect(&TLSFiles{CAFile: pki.ca}); err == nil {
		nc.Close()
		t.Error("connected without a client certificate, want a refusal")
	}
	if nc, err := connect(nil); err == nil {
		nc.Close()
		t.Error("connected without TLS, want a refusal")
	}
}

type testPKI struct{ ca, serverCert, serverKey, clientCert, clientKey string }

// writeTestPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA, as PEM files in dir.
func writeTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name, "EC PRIVATE KEY", der)
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pipeline test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, k
	}
	srvDER, srvKey := leaf(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	cliDER, cliKey := leaf(3, "origin-o1", x509.ExtKeyUsageClientAuth, nil)
	return testPKI{
		ca:         write("ca.pem", "CERTIFICATE", caDER),
		serverCert: write("server.pem", "CERTIFICATE", srvDER),
		serverKey:  writeKey("server-key.pem", srvKey),
		clientCert: write("client.pem", "CERTIFICATE", cliDER),
		clientKey:  writeKey("client-key.pem", cliKey),
	}
}

// TestAuthExampleConfigsMatchCode keeps configs/auth/ in step with the
// code: the pipeline YAML example must decode into AuthConfig, and the
// standalone nats-server.conf must hold exactly the accounts block that
// AuthConfig.ServerConf renders for it (the same text the embedded server
// parses), and parse into users with their roles' permissions, each in its
// account. Run with PIPELINE_UPDATE_CONF=1 to print the block.
func TestAuthExampleConfigsMatchCode(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "configs", "auth", "pipeline-auth.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		NATS struct {
			Auth AuthConfig `yaml:"auth"`
			TLS  *TLSFiles  `yaml:"tls"`
		} `yaml:"nats"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decode pipeline-auth.yaml: %v", err)
	}
	a := doc.NATS.Auth
	s := Subjects{}
	block, err := a.ServerConf(s)
	if err != nil {
		t.Fatalf("pipeline-auth.yaml: %v", err)
	}
	if os.Getenv("PIPELINE_UPDATE_CONF") != "" {
		fmt.Print(block)
	}
	conf, err := os.ReadFile(filepath.Join("..", "configs", "auth", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(conf), block) {
		t.Errorf("configs/auth/nats-server.conf does not hold the accounts block the code renders for pipeline-auth.yaml:\n%s", block)
	}

	for _, v := range []string{"ADMIN", "EXECUTOR", "RUNTIME", "CALLER", "ORIGIN_O1", "ORIGIN_O2"} {
		t.Setenv("NATS_"+v+"_PASSWORD", strings.ToLower(v)+"-pw")
	}
	opts, err := server.ProcessConfigFile(filepath.Join("..", "configs", "auth", "nats-server.conf"))
	if err != nil {
		t.Fatalf("parse nats-server.conf: %v", err)
	}
	want := map[string]struct {
		perms   *server.Permissions
		account string
	}{
		"admin":     {AdminPermissions(s), PipelineAccount},
		"executor":  {ExecutorPermissions(s), PipelineAccount},
		"runtime":   {RuntimePermissions(s), PipelineAccount},
		"caller":    {CallerPermissions(s), CallerAccount},
		"origin-o1": {OriginPermissions(s, "o1"), OriginAccount("o1")},
		"origin-o2": {OriginPermissions(s, "o2"), OriginAccount("o2")},
	}
	if !a.Enabled || len(opts.Users) != len(want) {
		t.Errorf("enabled=%v, nats-server.conf has %d users, want enabled and %d", a.Enabled, len(opts.Users), len(want))
	}
	for _, u := range opts.Users {
		w, ok := want[u.Username]
		if !ok {
			t.Errorf("unexpected user %q", u.Username)
			continue
		}
		if u.Password == "" || strings.HasPrefix(u.Password, "$") {
			t.Errorf("user %q: password %q not read from the environment", u.Username, u.Password)
		}
		if u.Account == nil || u.Account.Name != w.account {
			t.Errorf("user %q: account %v, want %s", u.Username, u.Account, w.account)
		}
		if !samePerms(u.Permissions, w.perms) {
			gj, _ := json.Marshal(u.Permissions)
			wj, _ := json.Marshal(w.perms)
			t.Errorf("user %q permissions\n got %s\nwant %s", u.Username, gj, wj)
		}
	}
}

// samePerms compares permissions ignoring the order of subjects and the
// response defaults the server fills in.
func samePerms(a, b *server.Permissions) bool {
	norm := func(p *server.SubjectPermission) [2][]string {
		if p == nil {
			return [2][]string{}
		}
		var out [2][]string
		for i, l := range [][]string{p.Allow, p.Deny} {
			if len(l) > 0 {
				out[i] = slices.Sorted(slices.Values(l))
			}
		}
		return out
	}
	if a == nil || b == nil {
		return a == b
	}
	if !reflect.DeepEqual(norm(a.Publish), norm(b.Publish)) || !reflect.DeepEqual(norm(a.Subscribe), norm(b.Subscribe)) {
		return false
	}
	return (a.Response == nil) == (b.Response == nil)
}

func TestAuthJobOrigin(t *testing.T) {
	cases := []struct {
		s       Subjects
		subject string
		want    string
		ok      bool
	}{
		{Subjects{}, "pipeline.jobs.fetch.o1", "o1", true},
		{Subjects{Prefix: "p2"}, "p2.jobs.fetch.edge-7", "edge-7", true},
		{Subjects{}, "p2.jobs.fetch.o1", "", false},
		{Subjects{}, "pipeline.jobs.fetch.", "", false},
		{Subjects{}, "pipeline.jobs.fetch.o1.extra", "", false},
		{Subjects{}, "pipeline.results.o1", "", false},
		{Subjects{}, "pipeline.jobs.fetch.*", "", false},
	}
	for _, tc := range cases {
		got, ok := tc.s.JobOrigin(tc.subject)
		if got != tc.want || ok != tc.ok {
			t.Errorf("JobOrigin(%q) = %q, %v; want %q, %v", tc.subject, got, ok, tc.want, tc.ok)
		}
	}
}

// TestMonitorLoopbackAndToken: the monitor listens on loopback by default;
// with a token every endpoint but /healthz needs it.
func TestMonitorLoopbackAndToken(t *testing.T) {
	for _, token := range []string{"", "mon-s3cret"} {
		srv, err := NewServer(ServerConfig{Port: -1, MonitorPort: -1, MonitorToken: token, StoreDir: t.TempDir()})
		if err == nil {
			err = srv.Start(context.Background())
		}
		if err != nil {
			t.Fatal(err)
		}
		addr := srv.MonitorAddr()
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Errorf("token %q: monitor on %q, want loopback", token, addr)
		}
		get := func(path, auth string) int {
			req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		want := 200
		if token != "" {
			want = 401
		}
		for _, path := range []string{"/varz", "/connz", "/accountz", "/jsz", "/subsz"} {
			if got := get(path, "Bearer nope"); got != want {
				t.Errorf("token %q: %s with a wrong token = %d, want %d", token, path, got, want)
			}
			if token != "" {
				if got := get(path, "Bearer "+token); got != 200 {
					t.Errorf("%s with the token = %d, want 200", path, got)
				}
			}
		}
		if got := get("/healthz", ""); got != 200 {
			t.Errorf("token %q: /healthz = %d, want 200", token, got)
		}
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
