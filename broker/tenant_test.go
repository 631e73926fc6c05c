package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// The attacks of issue 16, each run as the attacker's role against a real
// embedded server with auth on. Each checks the effect (a forged result
// reached o2, a stream vanished or changed, o1's data was read or wiped),
// not only that something was refused: reply reflection is refused by
// nobody, it can only be contained by accounts.

// tenantWorld is a server with the pipeline provisioned, a runtime echo
// service, o1's and o2's buckets with a secret each, and one job of o1 and
// one dead letter stored.
type tenantWorld struct {
	srv    *Server
	auth   AuthConfig
	admin  jetstream.JetStream
	o1kv   jetstream.KeyValue
	o2kv   jetstream.KeyValue
	s      Subjects
	jobCfg jetstream.StreamConfig
}

func newTenantWorld(t *testing.T, loosen bool) *tenantWorld {
	t.Helper()
	auth := testAuth()
	users, accounts, err := auth.ServerAccounts(Subjects{})
	if err != nil {
		t.Fatal(err)
	}
	if loosen {
		// Take every permission away from the origins and the caller: what
		// is left to stop them is the account boundary alone.
		for _, u := range users {
			if u.Account.Name != PipelineAccount {
				u.Permissions = nil
			}
		}
	}
	srv, err := NewServer(ServerConfig{Port: -1, MonitorPort: -2, StoreDir: t.TempDir(), Users: users, Accounts: accounts})
	if err == nil {
		err = srv.Start(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	provisionAsAdmin(t, srv, auth)
	w := &tenantWorld{srv: srv, auth: auth, s: Subjects{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.admin = newJS(t, connectAs(t, srv, auth, RoleAdmin, ""))

	rt := connectAs(t, srv, auth, RoleRuntime, "")
	svc, err := micro.AddService(rt, micro.Config{Name: "runtime", Version: "0.1.0", QueueGroup: RPCQueueGroup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	if err := svc.AddGroup(w.s.RPCGroup()).AddEndpoint("echo", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })); err != nil {
		t.Fatal(err)
	}
	if err := rt.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{"o1", "o2"} {
		js := newJS(t, connectAs(t, srv, auth, RoleOrigin, id))
		if err := ProvisionFinished(ctx, js, StreamsConfig{Storage: MemoryStorage, FinishedMaxBytes: 1 << 20}); err != nil {
			t.Fatalf("%s bucket: %v", id, err)
		}
		kv, err := js.KeyValue(ctx, FinishedBucket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, FinishedKey(id, "secret"), []byte(id+"'s secret result")); err != nil {
			t.Fatalf("%s put: %v", id, err)
		}
		if id == "o1" {
			w.o1kv = kv
			job, _ := (&Job{ID: "j1", Origin: "o1", URL: "http://example.com/", Headers: map[string]string{"Authorization": "Bearer o1-destination-secret"}}).Encode()
			if _, err := js.Publish(ctx, w.s.Job("o1"), job, jetstream.WithMsgID("j1")); err != nil {
				t.Fatalf("o1 job: %v", err)
			}
		} else {
			w.o2kv = kv
		}
	}
	if _, err := w.admin.Publish(ctx, w.s.DeadLetter("o1"), []byte(`{"dead":true}`)); err != nil {
		t.Fatal(err)
	}
	st, err := w.admin.Stream(ctx, JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	w.jobCfg = st.CachedInfo().Config
	return w
}

// intact fails unless the pipeline and o1's data are as newTenantWorld left
// them: no result stored for anyone, the job and the dead letter still
// there, the jobs stream unchanged, both secrets readable by their owners.
func (w *tenantWorld) intact(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := map[string]uint64{ResultsStream: 0, JobsStream: 1, DeadLetterStream: 1}
	for name, n := range want {
		st, err := w.admin.Stream(ctx, name)
		if err != nil {
			t.Errorf("stream %s: %v", name, err)
			continue
		}
		if got := st.CachedInfo().State.Msgs; got != n {
			t.Errorf("stream %s holds %d messages, want %d", name, got, n)
		}
		if name == JobsStream {
			c := st.CachedInfo().Config
			if c.RePublish != nil || len(c.Subjects) != len(w.jobCfg.Subjects) || c.Subjects[0] != w.jobCfg.Subjects[0] {
				t.Errorf("jobs stream config changed: republish %+v subjects %v", c.RePublish, c.Subjects)
			}
		}
	}
	for id, kv := range map[string]jetstream.KeyValue{"o1": w.o1kv, "o2": w.o2kv} {
		if _, err := kv.Get(ctx, FinishedKey(id, "secret")); err != nil {
			t.Errorf("%s's finished result: %v", id, err)
		}
	}
	ci, err := w.admin.Stream(ctx, kvStream(FinishedBucket))
	if err == nil {
		t.Errorf("a finished bucket exists in the pipeline account: %v", ci.CachedInfo().Config.Name)
	}
}

// settle lets reflected messages land: a flush round trip on every
// connection involved, then a short wait for the server's internal sends.
func settle(ncs ...*nats.Conn) {
	for _, nc := range ncs {
		_ = nc.FlushTimeout(2 * time.Second)
	}
	time.Sleep(150 * time.Millisecond)
}

func TestTenantReflectionAttacksFail(t *testing.T) {
	for _, loosen := range []bool{false, true} {
		name := "with role permissions"
		if loosen {
			name = "accounts alone"
		}
		t.Run(name, func(t *testing.T) { runReflectionAttacks(t, loosen) })
	}
}

func runReflectionAttacks(t *testing.T, loosen bool) {
	w := newTenantWorld(t, loosen)
	s := w.s
	forged, _ := (&Result{JobID: "forged", Origin: "o2", Status: 200, Body: []byte("attacker bytes")}).Encode()
	// A jobs stream config that republishes every job into o2's inbox.
	stolen := w.jobCfg
	stolen.RePublish = &jetstream.RePublish{Source: ">", Destination: InboxPrefix(RoleOrigin, "o2") + ".stolen.>"}
	update, _ := json.Marshal(stolen)

	o2 := connectAs(t, w.srv, w.auth, RoleOrigin, "o2")
	// Where o2 would see loot: the RePublish and KV delivery targets above,
	// and (without permissions) any pipeline subject in its account.
	var loot []*nats.Subscription
	for _, subj := range []string{InboxPrefix(RoleOrigin, "o2") + ".stolen.>", InboxPrefix(RoleOrigin, "o2") + ".kv", "pipeline.>"} {
		if sub, err := o2.SubscribeSync(subj); err == nil {
			loot = append(loot, sub)
		}
	}

	// Deputies: the runtime (any role that may call it), and JetStream's
	// DIRECT.GET of a key the attacker wrote itself.
	reflectTargets := []struct {
		name, reply string
		body        []byte
	}{
		{"forged result for o2", s.Result("o2"), forged},
		{"purge the dead letters", "$JS.API.STREAM.PURGE." + DeadLetterStream, []byte(`{}`)},
		{"delete the jobs stream", "$JS.API.STREAM.DELETE." + JobsStream, nil},
		{"update the jobs stream to republish into o2's inbox", "$JS.API.STREAM.UPDATE." + JobsStream, update},
		{"consume o1's finished store", "$JS.API.CONSUMER.CREATE." + kvStream(FinishedBucket), []byte(`{"stream_name":"KV_PIPELINE_FINISHED","config":{"deliver_subject":"_INBOX.origin.o2.kv"}}`)},
		{"take the executors' jobs", "$JS.API.CONSUMER.MSG.NEXT." + JobsStream + "." + JobsConsumer("o1"), []byte(`{"batch":10}`)},
	}
	for _, att := range []struct {
		role Role
		id   string
	}{{RoleCaller, ""}, {RoleOrigin, "o1"}, {RoleOrigin, "o2"}, {RoleExecutor, ""}} {
		// The executor is in the pipeline account: only the runtime's own
		// publish allow-list (inbox subjects) stops it reflecting there.
		nc := connectAs(t, w.srv, w.auth, att.role, att.id)
		js := newJS(t, nc)
		for _, tg := range reflectTargets {
			t.Run(string(att.role)+att.id+" via the runtime: "+tg.name, func(t *testing.T) {
				if err := nc.PublishMsg(&nats.Msg{Subject: s.RPC("echo"), Reply: tg.reply, Data: tg.body}); err != nil {
					t.Fatal(err)
				}
				settle(nc)
				w.intact(t)
			})
			if att.role != RoleOrigin {
				continue
			}
			t.Run(string(att.role)+att.id+" via DIRECT.GET: "+tg.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				// Its own key, holding the bytes it wants reflected.
				key := FinishedKey(att.id, "bait")
				if _, err := js.Publish(ctx, FinishedSubject(att.id, "bait"), tg.body); err != nil {
					t.Fatalf("own put: %v", err)
				}
				get := "$JS.API.DIRECT.GET." + kvStream(FinishedBucket) + ".$KV." + FinishedBucket + "." + key
				if err := nc.PublishMsg(&nats.Msg{Subject: get, Reply: tg.reply}); err != nil {
					t.Fatal(err)
				}
				settle(nc)
				w.intact(t)
			})
		}
	}
	// Nothing reached o2's inbox: no forged result, no republished job, no
	// KV delivery.
	// (o2 may see its own data there: its own bucket, its own calls.)
	settle(o2)
	for _, sub := range loot {
		for {
			m, err := sub.NextMsg(50 * time.Millisecond)
			if err != nil {
				break
			}
			if bytes.Contains(m.Data, []byte("o1")) {
				t.Errorf("o2 received o1's data %q on %s", m.Data, m.Subject)
			}
		}
	}
}

func TestTenantReadAndRollupAttacksFail(t *testing.T) {
	for _, loosen := range []bool{false, true} {
		name := "with role permissions"
		if loosen {
			name = "accounts alone"
		}
		t.Run(name, func(t *testing.T) { runReadAttacks(t, loosen) })
	}
}

func runReadAttacks(t *testing.T, loosen bool) {
	w := newTenantWorld(t, loosen)
	s := w.s
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A result for o1 waits in its consumer.
	ex := newJS(t, connectAs(t, w.srv, w.auth, RoleExecutor, ""))
	res, _ := (&Result{JobID: "j1", Origin: "o1", Status: 200, Body: []byte("o1's result")}).Encode()
	if _, err := ex.Publish(ctx, s.Result("o1"), res); err != nil {
		t.Fatal(err)
	}

	o2 := connectAs(t, w.srv, w.auth, RoleOrigin, "o2")
	o2js := newJS(t, o2)
	// Everything o2 might listen on; with permissions most of these are
	// refused, without them they exist only in o2's own account.
	var subs []*nats.Subscription
	for _, subj := range []string{s.JobsWildcard(), s.ResultsWildcard(), "$KV.>", "_INBOX.>", ">"} {
		if sub, err := o2.SubscribeSync(subj); err == nil {
			subs = append(subs, sub)
		}
	}
	_ = o2.Flush()

	reads := []struct {
		name    string
		subject string
		body    string
	}{
		{"pull o1's results through the imported API", PipelineAPIPrefix + ".CONSUMER.MSG.NEXT." + ResultsStream + "." + OriginConsumer("o1"), `{"batch":1,"no_wait":true}`},
		{"pull o1's results through the JetStream API", jsAPI + "CONSUMER.MSG.NEXT." + ResultsStream + "." + OriginConsumer("o1"), `{"batch":1,"no_wait":true}`},
		{"get o1's result by sequence", jsAPI + "STREAM.MSG.GET." + ResultsStream, `{"seq":1}`},
		{"direct-get o1's last result", jsAPI + "DIRECT.GET." + ResultsStream + "." + s.Result("o1"), ``},
		{"get o1's job by sequence", jsAPI + "STREAM.MSG.GET." + JobsStream, `{"seq":1}`},
		{"pull the executors' jobs", jsAPI + "CONSUMER.MSG.NEXT." + JobsStream + "." + JobsConsumer("o1"), `{"batch":1,"no_wait":true}`},
		{"create a consumer on the jobs stream", jsAPI + "CONSUMER.CREATE." + JobsStream, `{"stream_name":"PIPELINE_JOBS","config":{"ack_policy":"none"}}`},
		{"direct-get o1's finished result", jsAPI + "DIRECT.GET." + kvStream(FinishedBucket) + "." + FinishedSubject("o1", "secret"), ``},
		{"list streams", jsAPI + "STREAM.NAMES", `{}`},
	}
	for _, rd := range reads {
		t.Run("o2 "+rd.name, func(t *testing.T) {
			m, err := o2.Request(rd.subject, []byte(rd.body), 500*time.Millisecond)
			if err != nil {
				return // refused (no reply) or no responders: nothing read
			}
			t.Logf("answered from o2's own account: %s %s", m.Header.Get("Status"), m.Data)
			for _, secret := range []string{"o1's result", "o1-destination-secret", "o1's secret", JobsStream, ResultsStream} {
				if bytes.Contains(m.Data, []byte(secret)) {
					t.Errorf("reply to %s holds %q: %s", rd.subject, secret, m.Data)
				}
			}
		})
	}

	t.Run("o2 rolls up the finished store", func(t *testing.T) {
		msg := nats.NewMsg(FinishedSubject("o2", "x"))
		msg.Header.Set("Nats-Rollup", "all")
		msg.Data = []byte("wipe")
		_, err := o2js.PublishMsg(ctx, msg)
		if err != nil {
			t.Logf("rollup refused: %v", err)
		}
		settle(o2)
		if _, err := w.o1kv.Get(ctx, FinishedKey("o1", "secret")); err != nil {
			t.Errorf("o1's finished result after o2's rollup: %v", err)
		}
		// o2 only wiped its own.
		if _, err := w.o2kv.Get(ctx, FinishedKey("o2", "secret")); err == nil {
			t.Logf("o2's own key survived (rollup refused)")
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Errorf("o2's own key: %v", err)
		}
	})

	settle(o2)
	for _, sub := range subs {
		for {
			m, err := sub.NextMsg(50 * time.Millisecond)
			if err != nil {
				break
			}
			// Replies to o2's own requests arrive on its inbox: errors and
			// its own data only.
			if bytes.Contains(m.Data, []byte("o1")) {
				t.Errorf("o2 received o1's data %q on %s", m.Data, m.Subject)
			}
		}
	}
	// o1's result is still waiting for o1, undelivered.
	cons, err := pipelineJS(t, connectAs(t, w.srv, w.auth, RoleOrigin, "o1")).Consumer(ctx, ResultsStream, OriginConsumer("o1"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	if err != nil {
		t.Fatalf("o1 reads its result: %v", err)
	}
	if md, _ := m.Metadata(); md == nil || md.NumDelivered != 1 || string(m.Data()) != string(res) {
		t.Errorf("o1's result %+v, want its first delivery", md)
	}
}

// TestTenantJobIDsDoNotCollide: two origins storing a job with the same id
// (as an origin stores it, JobMsgID) both get it stored; neither is told
// "duplicate" because of the other.
func TestTenantJobIDsDoNotCollide(t *testing.T) {
	w := newTenantWorld(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range []string{"o2", "o1"} {
		js := newJS(t, connectAs(t, w.srv, w.auth, RoleOrigin, id))
		job, _ := (&Job{ID: "same-id", Origin: id, URL: "http://example.com/"}).Encode()
		ack, err := js.Publish(ctx, w.s.Job(id), job, jetstream.WithMsgID(JobMsgID(id, "same-id")))
		if err != nil || ack.Duplicate {
			t.Fatalf("%s stores job same-id: ack %+v, err %v; want stored", id, ack, err)
		}
	}
}

// TestShippedServerConfWorks runs a server from configs/auth/nats-server.conf
// itself (what an external server or cluster node uses): the admin
// provisions, an origin stores a job and binds its results consumer, the
// caller reaches nothing but the runtime.
func TestShippedServerConfWorks(t *testing.T) {
	for _, v := range []string{"ADMIN", "EXECUTOR", "RUNTIME", "CALLER", "ORIGIN_O1", "ORIGIN_O2"} {
		t.Setenv("NATS_"+v+"_PASSWORD", strings.ToLower(v)+"-pw")
	}
	opts, err := server.ProcessConfigFile(filepath.Join("..", "configs", "auth", "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoSigs = "127.0.0.1", -1, true, t.TempDir(), true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server from nats-server.conf not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	conn := func(user string, role Role, id string) *nats.Conn {
		nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(user, strings.ToLower(strings.ReplaceAll(strings.ToUpper(user), "-", "_"))+"-pw"),
			nats.CustomInboxPrefix(InboxPrefix(role, id)))
		if err != nil {
			t.Fatalf("%s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := Provision(ctx, newJS(t, conn("admin", RoleAdmin, "")), StreamsConfig{Tenants: []string{"o1", "o2"}}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	o1 := conn("origin-o1", RoleOrigin, "o1")
	job, _ := (&Job{ID: "j1", Origin: "o1", URL: "http://example.com/"}).Encode()
	if _, err := newJS(t, o1).Publish(ctx, Subjects{}.Job("o1"), job, jetstream.WithMsgID(JobMsgID("o1", "j1"))); err != nil {
		t.Fatalf("o1 stores a job: %v", err)
	}
	if _, err := pipelineJS(t, o1).Consumer(ctx, ResultsStream, OriginConsumer("o1")); err != nil {
		t.Fatalf("o1 binds its results consumer: %v", err)
	}
	if err := ProvisionFinished(ctx, newJS(t, o1), StreamsConfig{FinishedMaxBytes: 1 << 20}); err != nil {
		t.Fatalf("o1 creates its bucket: %v", err)
	}
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	defer scancel()
	if _, err := pipelineJS(t, conn("origin-o2", RoleOrigin, "o2")).Consumer(sctx, ResultsStream, OriginConsumer("o1")); err == nil {
		t.Fatal("o2 bound o1's results consumer")
	}
}
