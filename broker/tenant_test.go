package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
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
// service, a secret finished record for each of o1 and o2 in the results
// stream (ResultOf(id, "secret"), and BulkResultOf(id, "bulk") on the bulk
// lane, stored by the executor), each origin's
// delayed-jobs stream in its own account, and one job of o1 and one dead
// letter stored.
type tenantWorld struct {
	srv    *Server
	auth   AuthConfig
	admin  jetstream.JetStream
	s      Subjects
	jobCfg jetstream.StreamConfig
	// consumers are the consumer names of each pipeline stream as
	// provisioned.
	consumers map[string][]string
	// own are the results subjects an origin stored records on itself
	// (ResultOf(its id, ...)), or a test's executor stored results on:
	// intact allows them besides the secrets.
	own map[string]bool
}

// secret is origin id's secret finished record in the tenant world;
// bulkSecret its secret record on the bulk lane.
func secret(id string) []byte { return []byte(id + "'s secret result") }

func bulkSecret(id string) []byte { return []byte(id + "'s secret bulk result") }

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

	ex := newJS(t, connectAs(t, srv, auth, RoleExecutor, ""))
	for _, id := range []string{"o1", "o2"} {
		if _, err := ex.Publish(ctx, w.s.ResultOf(id, "secret"), secret(id), jetstream.WithMsgID(JobMsgID(id, "secret"))); err != nil {
			t.Fatalf("%s's secret record: %v", id, err)
		}
		if _, err := ex.Publish(ctx, w.s.BulkResultOf(id, "bulk"), bulkSecret(id), FirstRecord(w.s.RecordOf(id, "bulk"))); err != nil {
			t.Fatalf("%s's secret bulk record: %v", id, err)
		}
		js := newJS(t, connectAs(t, srv, auth, RoleOrigin, id))
		if err := ProvisionDelayed(ctx, js, StreamsConfig{Storage: MemoryStorage}); err != nil {
			t.Fatalf("%s's delayed stream: %v", id, err)
		}
		if id == "o1" {
			job, _ := (&Job{ID: "j1", Origin: "o1", URL: "http://example.com/", Headers: map[string]string{"Authorization": "Bearer o1-destination-secret"}}).Encode()
			if _, err := js.Publish(ctx, w.s.Job("o1"), job, jetstream.WithMsgID("j1")); err != nil {
				t.Fatalf("o1 job: %v", err)
			}
		}
	}
	// The origins' delayed streams live in their own accounts only.
	if _, err := w.admin.Stream(ctx, DelayedStream); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("a delayed stream in the pipeline account: err %v, want not found", err)
	}
	if _, err := w.admin.Publish(ctx, w.s.DeadLetter("o1"), []byte(`{"dead":true}`)); err != nil {
		t.Fatal(err)
	}
	st, err := w.admin.Stream(ctx, JobsStream)
	if err != nil {
		t.Fatal(err)
	}
	w.jobCfg = st.CachedInfo().Config
	w.consumers = make(map[string][]string)
	w.own = make(map[string]bool)
	for _, name := range []string{JobsStream, ResultsStream, DeadLetterStream} {
		w.consumers[name] = w.consumerNames(t, ctx, name)
	}
	return w
}

// consumerNames lists stream name's consumers, sorted.
func (w *tenantWorld) consumerNames(t *testing.T, ctx context.Context, name string) []string {
	t.Helper()
	st, err := w.admin.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	var names []string
	l := st.ConsumerNames(ctx)
	for n := range l.Name() {
		names = append(names, n)
	}
	if err := l.Err(); err != nil {
		t.Fatalf("consumers of %s: %v", name, err)
	}
	slices.Sort(names)
	return names
}

// ownRecord stores bait as origin id's own record ResultOf(id, job), as the
// origin may (a canceled job's record), and lets intact allow it.
func (w *tenantWorld) ownRecord(t *testing.T, ctx context.Context, js jetstream.JetStream, id, job string, bait []byte) {
	t.Helper()
	if _, err := js.Publish(ctx, w.s.ResultOf(id, job), bait); err != nil {
		t.Fatalf("%s stores its own record %s: %v", id, job, err)
	}
	w.own[w.s.ResultOf(id, job)] = true
}

// intact fails unless the pipeline and o1's data are as newTenantWorld left
// them: the results stream holds the two secrets, unchanged, and nothing
// else but what an origin stored on its own subjects itself (ownRecord); the
// job and the dead letter still there, the jobs stream unchanged, no
// consumer added or removed.
func (w *tenantWorld) intact(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	want := map[string]uint64{JobsStream: 1, DeadLetterStream: 1}
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
	st, err := w.admin.Stream(ctx, ResultsStream)
	if err != nil {
		t.Fatalf("stream %s: %v", ResultsStream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatalf("stream %s info: %v", ResultsStream, err)
	}
	for subj, n := range info.State.Subjects {
		if subj == w.s.ResultOf("o1", "secret") || subj == w.s.ResultOf("o2", "secret") ||
			subj == w.s.BulkResultOf("o1", "bulk") || subj == w.s.BulkResultOf("o2", "bulk") {
			if n != 1 {
				t.Errorf("%d records on %s, want the secret only", n, subj)
			}
			continue
		}
		if !w.own[subj] {
			t.Errorf("results stream holds %d messages on %s, stored by no one allowed to", n, subj)
		}
	}
	for _, id := range []string{"o1", "o2"} {
		m, err := st.GetLastMsgForSubject(ctx, w.s.ResultOf(id, "secret"))
		if err != nil || !bytes.Equal(m.Data, secret(id)) {
			t.Errorf("%s's secret record: %v, want it unchanged", id, err)
		}
		m, err = st.GetLastMsgForSubject(ctx, w.s.BulkResultOf(id, "bulk"))
		if err != nil || !bytes.Equal(m.Data, bulkSecret(id)) {
			t.Errorf("%s's secret bulk record: %v, want it unchanged", id, err)
		}
	}
	for name, names := range w.consumers {
		if got := w.consumerNames(t, ctx, name); !slices.Equal(got, names) {
			t.Errorf("stream %s has consumers %v, want %v", name, got, names)
		}
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
	// DIRECT.GET (through the origin's import) of a record the attacker
	// stored itself on its own results subject, answered by the pipeline
	// account's results stream.
	reflectTargets := []struct {
		name, reply string
		body        []byte
	}{
		{"forged result for o2", s.Result("o2"), forged},
		{"purge the dead letters", "$JS.API.STREAM.PURGE." + DeadLetterStream, []byte(`{}`)},
		{"delete the jobs stream", "$JS.API.STREAM.DELETE." + JobsStream, nil},
		{"update the jobs stream to republish into o2's inbox", "$JS.API.STREAM.UPDATE." + JobsStream, update},
		{"forged record on o2's job subject", s.ResultOf("o2", "secret"), forged},
		{"consume o1's results", "$JS.API.CONSUMER.CREATE." + ResultsStream, []byte(`{"stream_name":"PIPELINE_RESULTS","config":{"ack_policy":"none","filter_subject":"pipeline.results.o1.*","deliver_subject":"_INBOX.origin.o2.kv"}}`)},
		{"purge o1's results", "$JS.API.STREAM.PURGE." + ResultsStream, []byte(`{"filter":"pipeline.results.o1.*"}`)},
		{"delete o1's secret by sequence", "$JS.API.STREAM.MSG.DELETE." + ResultsStream, []byte(`{"seq":1}`)},
		{"delete o2's consumer", "$JS.API.CONSUMER.DELETE." + ResultsStream + "." + OriginConsumer("o2"), nil},
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
				// Its own record, holding the bytes it wants reflected.
				w.ownRecord(t, ctx, js, att.id, "bait", tg.body)
				get := PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf(att.id, "bait")
				if err := nc.PublishMsg(&nats.Msg{Subject: get, Reply: tg.reply}); err != nil {
					t.Fatal(err)
				}
				settle(nc)
				w.intact(t)
			})
		}
	}
	// Nothing reached o2's inbox: no forged result, no republished job, no
	// push-consumer delivery.
	// (o2 may see its own data there: its own records, its own calls.)
	settle(o2)
	for _, sub := range loot {
		for {
			m, err := sub.NextMsg(50 * time.Millisecond)
			if err != nil {
				break
			}
			if m.Subject == s.RPC("echo") || m.Subject == s.ResultOf("o2", "bait") {
				continue // o2's own attack, seen on its own "pipeline.>"
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A result for o1 waits in its consumer.
	ex := newJS(t, connectAs(t, w.srv, w.auth, RoleExecutor, ""))
	res, _ := (&Result{JobID: "j1", Origin: "o1", Status: 200, Body: []byte("o1's result")}).Encode()
	if _, err := ex.Publish(ctx, s.Result("o1"), res); err != nil {
		t.Fatal(err)
	}
	w.own[s.ResultOf("o1", LegacyResultToken)] = true // where the plain subject's result is kept

	o2 := connectAs(t, w.srv, w.auth, RoleOrigin, "o2")
	o2js := newJS(t, o2)
	// Everything o2 might listen on; with permissions most of these are
	// refused, without them they exist only in o2's own account.
	var subs []*nats.Subscription
	for _, subj := range []string{s.JobsWildcard(), s.ResultsWildcard(), "_INBOX.>", ">"} {
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
		{"pull o1's bulk lane through the imported API", PipelineAPIPrefix + ".CONSUMER.MSG.NEXT." + ResultsStream + "." + OriginBulkConsumer("o1"), `{"batch":1,"no_wait":true}`},
		{"pull o1's bulk lane through the JetStream API", jsAPI + "CONSUMER.MSG.NEXT." + ResultsStream + "." + OriginBulkConsumer("o1"), `{"batch":1,"no_wait":true}`},
		{"direct-get o1's bulk record through the imported API", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.BulkResultOf("o1", "bulk"), ``},
		{"direct-get o1's record on either lane", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.RecordOf("o1", "bulk"), ``},
		{"direct-get o1's records on both lanes by wildcard", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.RecordsFilter("o1"), ``},
		{"direct-get every origin's records on both lanes", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.RecordOf("*", "*"), ``},
		{"direct-get its own records with o1's bulk record in the body", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.RecordOf("o2", "bulk"), `{"last_by_subj":"` + s.BulkResultOf("o1", "bulk") + `"}`},
		{"direct-get its own records with a batch over o1's bulk lane", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.RecordsFilter("o2"), `{"next_by_subj":"` + s.BulkResultsFilter("o1") + `","batch":10}`},
		{"get o1's result by sequence", jsAPI + "STREAM.MSG.GET." + ResultsStream, `{"seq":1}`},
		{"direct-get o1's last result", jsAPI + "DIRECT.GET." + ResultsStream + "." + s.Result("o1"), ``},
		{"direct-get o1's record through the JetStream API", jsAPI + "DIRECT.GET." + ResultsStream + "." + s.ResultOf("o1", "secret"), ``},
		{"direct-get o1's record through the imported API", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o1", "secret"), ``},
		{"direct-get o1's records by wildcard", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o1", "*"), ``},
		{"direct-get every record by wildcard", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultsWildcard(), ``},
		{"direct-get by sequence through the imported API", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream, `{"seq":1}`},
		{"direct-get by sequence through the JetStream API", jsAPI + "DIRECT.GET." + ResultsStream, `{"seq":1}`},
		{"direct-get o1's last record by body", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream, `{"last_by_subj":"` + s.ResultOf("o1", "secret") + `"}`},
		{"direct-get o1's last records in one batch", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream, `{"multi_last":["` + s.ResultsWildcard() + `"]}`},
		{"direct-get o1's last records in one batch through the JetStream API", jsAPI + "DIRECT.GET." + ResultsStream, `{"multi_last":["` + s.ResultsWildcard() + `"]}`},
		// Its own direct get (allowed) with a body that names other
		// subjects or sequences: the server answers 408, never o1's.
		{"direct-get its own record with a sequence in the body", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o2", "secret"), `{"seq":1}`},
		{"direct-get its own record with o1's subject in the body", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o2", "secret"), `{"last_by_subj":"` + s.ResultOf("o1", "secret") + `"}`},
		{"direct-get its own record with a batch over every record", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o2", "secret"), `{"next_by_subj":"` + s.ResultsWildcard() + `","batch":10}`},
		{"direct-get its own record with o1's last records", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o2", "secret"), `{"multi_last":["` + s.ResultOf("o1", "*") + `"]}`},
		{"direct-get its own record from the stream's start", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o2", "secret"), `{"start_time":"2000-01-01T00:00:00Z"}`},
		// A wildcard as its own key: the last of its own records, at most.
		{"direct-get its own records by wildcard", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o2", "*"), ``},
		{"direct-get its own records by full wildcard", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o2", ">"), ``},
		{"direct-get below its own records by full wildcard", PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.ResultOf("o2", "*.>"), ``},
		{"list the results stream's subjects through the imported API", PipelineAPIPrefix + ".STREAM.INFO." + ResultsStream, `{"subjects_filter":">"}`},
		{"list the results stream's subjects through the JetStream API", jsAPI + "STREAM.INFO." + ResultsStream, `{"subjects_filter":">"}`},
		{"get o1's record by sequence through the imported API", PipelineAPIPrefix + ".STREAM.MSG.GET." + ResultsStream, `{"seq":1}`},
		{"create a consumer on o1's results through the imported API", PipelineAPIPrefix + ".CONSUMER.CREATE." + ResultsStream, `{"stream_name":"PIPELINE_RESULTS","config":{"ack_policy":"none","filter_subject":"pipeline.results.o1.*","deliver_subject":"_INBOX.origin.o2.loot"}}`},
		{"get o1's job by sequence", jsAPI + "STREAM.MSG.GET." + JobsStream, `{"seq":1}`},
		{"pull the executors' jobs", jsAPI + "CONSUMER.MSG.NEXT." + JobsStream + "." + JobsConsumer("o1"), `{"batch":1,"no_wait":true}`},
		{"create a consumer on the jobs stream", jsAPI + "CONSUMER.CREATE." + JobsStream, `{"stream_name":"PIPELINE_JOBS","config":{"ack_policy":"none"}}`},
		{"list streams", jsAPI + "STREAM.NAMES", `{}`},
	}
	for _, rd := range reads {
		t.Run("o2 "+rd.name, func(t *testing.T) {
			// Every reply (a batch or multi_last request has several), until
			// none comes for a while: refused (no reply), no responders, an
			// error, or o2's own data only.
			for _, m := range requestAll(t, o2, rd.subject, []byte(rd.body)) {
				t.Logf("answered: status %q subject %q data %s", m.Header.Get("Status"), m.Header.Get("Nats-Subject"), m.Data)
				for _, secret := range []string{"o1's result", "o1-destination-secret", "o1's secret", JobsStream, ResultsStream} {
					if bytes.Contains(m.Data, []byte(secret)) {
						t.Errorf("reply to %s holds %q: %s", rd.subject, secret, m.Data)
					}
				}
				if subj := m.Header.Get("Nats-Subject"); subj != "" && !strings.HasPrefix(subj, s.ResultOf("o2", "")) && !strings.HasPrefix(subj, s.BulkResultOf("o2", "")) {
					t.Errorf("reply to %s is the message on %s: %s", rd.subject, subj, m.Data)
				}
				for k, vs := range m.Header {
					for _, v := range vs {
						if strings.Contains(v, "o1") {
							t.Errorf("reply to %s has header %s: %s", rd.subject, k, v)
						}
					}
				}
			}
		})
	}

	// o2 must not store anything on o1's results subjects (a forged result,
	// a record over o1's secret), with or without its permissions.
	for _, subj := range []string{s.ResultOf("o1", "secret"), s.ResultOf("o1", "forged"), s.Result("o1"), s.ResultOf("o1", LegacyResultToken),
		s.BulkResultOf("o1", "bulk"), s.BulkResultOf("o1", "forged"), s.BulkResultOf("o2", "forged")} {
		t.Run("o2 forges a record on "+subj, func(t *testing.T) {
			fctx, fcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer fcancel()
			if ack, err := o2js.Publish(fctx, subj, []byte("forged by o2")); err == nil {
				t.Errorf("o2 stored a record on %s: %+v", subj, ack)
			}
			settle(o2)
			w.intact(t)
		})
	}
	// o2 may store records on its own job subjects: with a rollup header
	// that would wipe the whole results stream (or its subject), a TTL, a
	// schedule or a counter, it must not touch anything else.
	for _, h := range []struct{ name, value string }{
		{"Nats-Rollup", "all"},
		{"Nats-Rollup", "sub"},
		{"Nats-TTL", "1s"},
		{"Nats-Schedule", "@at 2000-01-01T00:00:00Z"},
		{"Nats-Incr", "1"},
	} {
		t.Run("o2 stores a record with "+h.name+": "+h.value, func(t *testing.T) {
			msg := nats.NewMsg(s.ResultOf("o2", "x"))
			msg.Header.Set(h.name, h.value)
			msg.Data = []byte("wipe")
			if _, err := o2js.PublishMsg(ctx, msg); err != nil {
				t.Logf("refused: %v", err)
			} else {
				w.own[s.ResultOf("o2", "x")] = true
			}
			settle(o2)
			w.intact(t)
		})
	}

	settle(o2)
	asked := make(map[string]bool)
	for _, rd := range reads {
		asked[rd.subject] = true
	}
	for _, sub := range subs {
		for {
			m, err := sub.NextMsg(50 * time.Millisecond)
			if err != nil {
				break
			}
			if asked[m.Subject] {
				continue // o2's own request, seen on its own '>'
			}
			// Replies to o2's own requests arrive on its inbox: errors and
			// its own data only.
			if bytes.Contains(m.Data, []byte("o1")) {
				t.Errorf("o2 received o1's data %q on %s", m.Data, m.Subject)
			}
		}
	}
	// o1's secret record and its result are still waiting for o1,
	// undelivered, and nothing else.
	w.intact(t)
	cons, err := pipelineJS(t, connectAs(t, w.srv, w.auth, RoleOrigin, "o1")).Consumer(ctx, ResultsStream, OriginConsumer("o1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := cons.Fetch(3, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatalf("o1 reads its results: %v", err)
	}
	var got [][]byte
	for m := range b.Messages() {
		if md, _ := m.Metadata(); md == nil || md.NumDelivered != 1 {
			t.Errorf("o1's result %s: %+v, want its first delivery", m.Data(), md)
		}
		got = append(got, m.Data())
	}
	if len(got) != 2 || !bytes.Equal(got[0], secret("o1")) || !bytes.Equal(got[1], res) {
		t.Errorf("o1 read %q, want its secret record and its result", got)
	}
	// get-result: o1 reads its records on either lane, through its import.
	o1 := connectAs(t, w.srv, w.auth, RoleOrigin, "o1")
	for job, want := range map[string][]byte{"secret": secret("o1"), "bulk": bulkSecret("o1")} {
		m, err := o1.RequestWithContext(ctx, PipelineAPIPrefix+".DIRECT.GET."+ResultsStream+"."+s.RecordOf("o1", job), nil)
		if err != nil {
			t.Errorf("o1 direct-gets its record %s: %v", job, err)
		} else if !bytes.Equal(m.Data, want) {
			t.Errorf("o1 direct-gets its record %s: %q, want %q", job, m.Data, want)
		}
	}
	bulk, err := pipelineJS(t, o1).Consumer(ctx, ResultsStream, OriginBulkConsumer("o1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err = bulk.Fetch(2, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatalf("o1 reads its bulk lane: %v", err)
	}
	got = nil
	for m := range b.Messages() {
		if md, _ := m.Metadata(); md == nil || md.NumDelivered != 1 {
			t.Errorf("o1's bulk record %s: %+v, want its first delivery", m.Data(), md)
		}
		got = append(got, m.Data())
	}
	if len(got) != 1 || !bytes.Equal(got[0], bulkSecret("o1")) {
		t.Errorf("o1 read %q on its bulk lane, want its secret bulk record", got)
	}
}

// requestAll sends a request from nc and returns every reply that arrives
// until none has for half a second (a refused request gets none).
func requestAll(t *testing.T, nc *nats.Conn, subject string, body []byte) []*nats.Msg {
	t.Helper()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		t.Fatal(err)
	}
	var out []*nats.Msg
	for {
		m, err := sub.NextMsg(500 * time.Millisecond)
		if err != nil {
			return out
		}
		out = append(out, m)
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
// provisions, an origin stores a job, binds its results consumer, creates its
// delayed stream, stores and direct-gets its records, and o2 cannot bind
// o1's consumer.
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
	if err := ProvisionDelayed(ctx, newJS(t, o1), StreamsConfig{}); err != nil {
		t.Fatalf("o1 creates its delayed stream: %v", err)
	}
	// Its records: it stores one (a canceled job's) and reads it back by
	// direct get through its import; a missing one is a 404.
	s := Subjects{}
	if _, err := newJS(t, o1).Publish(ctx, s.ResultOf("o1", "j1"), []byte("canceled")); err != nil {
		t.Fatalf("o1 stores its record: %v", err)
	}
	for job, want := range map[string]string{"j1": "", "missing": "404"} {
		m, err := o1.Request(PipelineAPIPrefix+".DIRECT.GET."+ResultsStream+"."+s.ResultOf("o1", job), nil, 2*time.Second)
		if err != nil || m.Header.Get("Status") != want {
			t.Fatalf("o1 direct-gets its record %s: %v, %v; want status %q", job, m, err, want)
		}
	}
	sctx, scancel := context.WithTimeout(ctx, time.Second)
	defer scancel()
	if _, err := pipelineJS(t, conn("origin-o2", RoleOrigin, "o2")).Consumer(sctx, ResultsStream, OriginConsumer("o1")); err == nil {
		t.Fatal("o2 bound o1's results consumer")
	}
}

// TestTenantCannotSuppressAnotherOriginsResult: the results stream
// de-duplicates by Nats-Msg-Id across all subjects, and an origin may store
// records there (canceled jobs) with any Nats-Msg-Id it likes. Records are
// therefore stored by subject (FirstRecord: only if the job's own subject
// holds none), never by message id: an origin that stores a record under
// another origin's job id as its message id, or on its own subject for the
// same job id, does not stop the executor's real result for that job.
func TestTenantCannotSuppressAnotherOriginsResult(t *testing.T) {
	w := newTenantWorld(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o1 := newJS(t, connectAs(t, w.srv, w.auth, RoleOrigin, "o1"))
	for _, opt := range []jetstream.PublishOpt{jetstream.WithMsgID("o2-job"), FirstRecord(w.s.RecordOf("o1", "o2-job"))} {
		if _, err := o1.Publish(ctx, w.s.ResultOf("o1", "o2-job"), []byte("bait"), opt); err != nil && !IsRecordTaken(err) {
			t.Fatal(err)
		}
	}
	ex := newJS(t, connectAs(t, w.srv, w.auth, RoleExecutor, ""))
	// As the executor stores a result (executor.publish).
	record := w.s.RecordOf("o2", "o2-job")
	ack, err := ex.Publish(ctx, w.s.BulkResultOf("o2", "o2-job"), []byte("o2's large result"), FirstRecord(record))
	if err != nil || ack.Duplicate {
		t.Fatalf("o2's result: ack %+v, err %v; want it stored", ack, err)
	}
	// A second record of the same job is refused by its subjects, on
	// either lane.
	for _, subj := range []string{w.s.ResultOf("o2", "o2-job"), w.s.BulkResultOf("o2", "o2-job")} {
		if _, err := ex.Publish(ctx, subj, []byte("again"), FirstRecord(record)); !IsRecordTaken(err) {
			t.Fatalf("second record of one job on %s: %v, want the stream to refuse it", subj, err)
		}
	}
}
