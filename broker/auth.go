package broker

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// Per-role NATS users. With authentication on, every process connects as the
// user of its role and may publish and subscribe only where that role needs
// to (PROTOCOL.md §2, §3):
//
//   - origin <id>, alone in its own account (accounts.go): publish its own
//     jobs (<prefix>.jobs.fetch.<id>), read and ack its own results consumer
//     (origin-<id>, filtered on <prefix>.results.<id>.*, provisioned by the
//     admin), direct-get its own results (get-result), publish on its own
//     results subjects (a canceled job's record), call the runtime
//     (<prefix>.rpc.*); subscribe only under its own inbox prefix. It cannot
//     read, consume or ack another origin's results, nor publish them.
//     (Its job bodies are still its own words: executors must take a job's
//     origin from the subject, see Subjects.JobOrigin.)
//   - executor: create and read the per-origin jobs consumers ("jobs-<id>"),
//     ack jobs, publish results (<prefix>.results.*) and the jobs stream's
//     keepers (<prefix>.jobs.keep), process dead letters; it cannot
//     publish jobs nor read results.
//   - runtime: serve <prefix>.rpc.> in queue group "runtime" and the micro
//     discovery subjects ($SRV.>), and publish only to inbox reply subjects.
//   - caller: call the runtime over NATS (e.g. `loadgen rpc --via nats-raw`).
//   - admin: the provisioner and operator tools: the whole JetStream API,
//     $SRV discovery, job replay from the dead-letter stream.

// Role names a kind of pipeline process; each role has its own NATS user.
type Role string

// Roles.
const (
	// RoleAdmin provisions streams and runs operator tools (dlq list/replay).
	RoleAdmin Role = "admin"
	// RoleOrigin is an origin; each origin id has its own user.
	RoleOrigin Role = "origin"
	// RoleExecutor is an executor; all executors share one user.
	RoleExecutor Role = "executor"
	// RoleRuntime is the runtime micro service.
	RoleRuntime Role = "runtime"
	// RoleCaller calls runtime functions over NATS request-reply.
	RoleCaller Role = "caller"
)

// ErrAuthConfig is returned, wrapped with detail, for an unusable AuthConfig:
// a missing user or password, a duplicate user name, a bad origin id, an
// unknown role.
var ErrAuthConfig = errors.New("broker: invalid auth config")

// Credentials are one NATS user's name and password. Its String, GoString and
// zerolog forms never contain the password, so logging a Credentials (or a
// struct holding one) with %v, %+v or zerolog's Object does not leak it.
type Credentials struct {
	// User is the NATS user name.
	User string `yaml:"user"`
	// Password is the password. On the server side (ServerAccounts) it may be a
	// bcrypt hash ("$2a$..."), which nats-server compares against; a
	// connecting role (Apply) needs the plaintext. If empty, PasswordEnv is
	// used.
	Password string `yaml:"password"`
	// PasswordEnv names an environment variable holding the password; it is
	// read when Password is empty. Keeps secrets out of config files.
	PasswordEnv string `yaml:"password_env"`
}

// String describes c without its password.
func (c Credentials) String() string {
	switch {
	case c.Password != "":
		return fmt.Sprintf("{user:%s password:[redacted]}", c.User)
	case c.PasswordEnv != "":
		return fmt.Sprintf("{user:%s password_env:%s}", c.User, c.PasswordEnv)
	default:
		return fmt.Sprintf("{user:%s}", c.User)
	}
}

// GoString is String, so %#v does not print the password either.
func (c Credentials) GoString() string { return "broker.Credentials" + c.String() }

// MarshalZerologObject logs the user name only.
func (c Credentials) MarshalZerologObject(e *zerolog.Event) {
	e.Str("user", c.User)
	if c.PasswordEnv != "" {
		e.Str("password_env", c.PasswordEnv)
	}
}

// secret returns the password: Password, else the value of PasswordEnv.
func (c Credentials) secret() (string, error) {
	if c.Password != "" {
		return c.Password, nil
	}
	if c.PasswordEnv == "" {
		return "", fmt.Errorf("user %q: no password (set password or password_env)", c.User)
	}
	v, ok := os.LookupEnv(c.PasswordEnv)
	if !ok || v == "" {
		return "", fmt.Errorf("user %q: environment variable %s is not set", c.User, c.PasswordEnv)
	}
	return v, nil
}

func (c Credentials) empty() bool { return c.User == "" && c.Password == "" && c.PasswordEnv == "" }

// isBcrypt reports whether p looks like a bcrypt hash, which nats-server
// accepts in place of a plaintext password.
func isBcrypt(p string) bool {
	return strings.HasPrefix(p, "$2a$") || strings.HasPrefix(p, "$2b$") || strings.HasPrefix(p, "$2y$")
}

// AuthConfig holds the per-role NATS users. The zero value (Enabled false)
// means no authentication: roles connect without credentials and the embedded
// server accepts anyone. Configure it in YAML as
//
//	auth:
//	  enabled: true
//	  admin:    {user: admin,    password_env: NATS_ADMIN_PASSWORD}
//	  executor: {user: executor, password_env: NATS_EXECUTOR_PASSWORD}
//	  runtime:  {user: runtime,  password_env: NATS_RUNTIME_PASSWORD}
//	  origins:
//	    o1: {user: origin-o1, password_env: NATS_ORIGIN_O1_PASSWORD}
//
// A role whose Credentials are empty gets no user (it cannot connect).
type AuthConfig struct {
	// Enabled turns authentication on.
	Enabled bool `yaml:"enabled"`
	// Admin is the provisioner / operator user (JetStream API, $SRV).
	Admin Credentials `yaml:"admin"`
	// Executor is the user every executor connects as.
	Executor Credentials `yaml:"executor"`
	// Runtime is the runtime micro service's user.
	Runtime Credentials `yaml:"runtime"`
	// Caller is a user that may only call runtime functions. Optional.
	Caller Credentials `yaml:"caller"`
	// Origins maps each origin id to its own user, alone in its own NATS
	// account (see PipelineAccount).
	Origins map[string]Credentials `yaml:"origins"`
	// OriginMaxStore caps each origin account's JetStream storage in bytes
	// (its delayed-jobs stream, all replicas). If zero,
	// DefaultOriginMaxStore is used.
	OriginMaxStore int64 `yaml:"origin_max_store"`
}

// credentials returns the configured credentials of role (origin: of
// originID).
func (a AuthConfig) credentials(role Role, originID string) (Credentials, error) {
	switch role {
	case RoleAdmin:
		return a.Admin, nil
	case RoleExecutor:
		return a.Executor, nil
	case RoleRuntime:
		return a.Runtime, nil
	case RoleCaller:
		return a.Caller, nil
	case RoleOrigin:
		if err := ValidateToken("origin id", originID); err != nil {
			return Credentials{}, fmt.Errorf("%w: %v", ErrAuthConfig, err)
		}
		return a.Origins[originID], nil
	}
	return Credentials{}, fmt.Errorf("%w: unknown role %q", ErrAuthConfig, role)
}

// Apply sets the user, password and inbox prefix of cc for role (for
// RoleOrigin, for origin originID; ignored otherwise). With auth disabled it
// leaves cc unchanged. It fails with ErrAuthConfig (wrapped) when the role
// has no user or its password cannot be read, or is a bcrypt hash (a client
// needs the plaintext).
func (a AuthConfig) Apply(cc *ConnConfig, role Role, originID string) error {
	if !a.Enabled {
		return nil
	}
	c, err := a.credentials(role, originID)
	if err != nil {
		return err
	}
	if c.User == "" {
		return fmt.Errorf("%w: no user configured for role %s%s", ErrAuthConfig, role, originSuffix(role, originID))
	}
	pw, err := c.secret()
	if err != nil {
		return fmt.Errorf("%w: role %s: %v", ErrAuthConfig, role, err)
	}
	if isBcrypt(pw) {
		return fmt.Errorf("%w: role %s: user %q has a bcrypt hash as password; a client needs the plaintext", ErrAuthConfig, role, c.User)
	}
	cc.User, cc.Password, cc.Token = c.User, pw, ""
	cc.InboxPrefix = InboxPrefix(role, originID)
	return nil
}

func originSuffix(role Role, originID string) string {
	if role == RoleOrigin {
		return " " + originID
	}
	return ""
}

// InboxPrefix is the reply-subject prefix of role's connections (for
// RoleOrigin, of origin originID), e.g. "_INBOX.origin.o1"; each role may
// subscribe only below its own prefix, so no role can read replies (JetStream
// API answers, pulled messages, PubAcks) meant for another.
func InboxPrefix(role Role, originID string) string {
	if role == RoleOrigin {
		return "_INBOX.origin." + originID
	}
	return "_INBOX." + string(role)
}

// JetStream API and ack subjects.
const (
	jsAPI = "$JS.API."
	jsAck = "$JS.ACK."
)

// kvStream is the name of the stream behind key-value bucket bucket.
func kvStream(bucket string) string { return "KV_" + bucket }

func inboxSub(role Role, originID string) string { return InboxPrefix(role, originID) + ".>" }

// OriginPermissions are origin originID's permissions in its own account
// (OriginAccount) under prefix s.
//
// Publish, into the pipeline account through its imports: its jobs subject
// and cancel marks; its own results subjects (the record of a job it
// canceled); the info and pull (MSG.NEXT) of its own results consumers
// (both lanes) and the direct get of its own records, under
// PipelineAPIPrefix; those consumers' acks; runtime calls. In its own account: its delayed-jobs
// stream and account info. Subscribe: its own inbox prefix. Nothing else:
// no other JetStream API call, no consumer create anywhere (the admin
// provisions its results consumer), no other origin's results. Even where a
// permission were missing, its account has no import of another origin's
// subjects.
func OriginPermissions(s Subjects, originID string) *server.Permissions {
	cons, bulk := OriginConsumer(originID), OriginBulkConsumer(originID)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			s.Job(originID),
			s.Cancel(originID, "*"),
			s.ResultsFilter(originID),
			PipelineAPIPrefix + ".CONSUMER.INFO." + ResultsStream + "." + cons,
			PipelineAPIPrefix + ".CONSUMER.MSG.NEXT." + ResultsStream + "." + cons,
			PipelineAPIPrefix + ".CONSUMER.INFO." + ResultsStream + "." + bulk,
			PipelineAPIPrefix + ".CONSUMER.MSG.NEXT." + ResultsStream + "." + bulk,
			PipelineAPIPrefix + ".DIRECT.GET." + ResultsStream + "." + s.RecordsFilter(originID),
			jsAck + ResultsStream + "." + cons + ".>",
			jsAck + ResultsStream + "." + bulk + ".>",
			jsAPI + "CONSUMER.CREATE." + JobsStream + "." + JobsConsumer(originID) + "." + s.Job(originID),
			jsAPI + "INFO",
			// Its own delayed-jobs stream: schedules, its due consumer.
			s.DelayedWildcard(),
			jsAPI + "STREAM.INFO." + DelayedStream,
			jsAPI + "STREAM.CREATE." + DelayedStream,
			jsAPI + "STREAM.UPDATE." + DelayedStream,
			jsAPI + "STREAM.MSG.DELETE." + DelayedStream,
			jsAPI + "DIRECT.GET." + DelayedStream + "." + s.DelayedAt(originID, ">"),
			jsAPI + "CONSUMER.CREATE." + DelayedStream + "." + DueConsumer(originID) + "." + s.DelayedDue(originID),
			jsAPI + "CONSUMER.INFO." + DelayedStream + "." + DueConsumer(originID),
			jsAPI + "CONSUMER.MSG.NEXT." + DelayedStream + "." + DueConsumer(originID),
			jsAck + DelayedStream + "." + DueConsumer(originID) + ".>",
			s.RPCGroup() + ".*",
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{inboxSub(RoleOrigin, originID)}},
	}
}

// ExecutorPermissions are the executors' permissions under prefix s.
//
// Publish: results (<prefix>.results.> and the bulk lane, <prefix>.bulk.>),
// dead letters (<prefix>.dlq.>) and the jobs stream's keepers
// (<prefix>.jobs.keep, KeepJobsBlock);
// the jobs consumers' create (filtered on a job subject only), list, info,
// pull and acks (acks explicitly, not via allow_responses, which would allow
// one reply only and break InProgress followed by Ack); the dead-letter
// consumer's info, pull and acks; stream info, message get and delete on the
// jobs stream (moving a dead job); reading and writing the destination
// rate schedules (RatesBucket); trimming the results stream (TrimResults:
// its stream info, consumer list, purge and a direct get by start time);
// a direct get of a job's record (a key's earlier job, StoreAfterRefusal).
// Not granted: publishing jobs, unfiltered consumers, consumer delete,
// reading results through a consumer or a stream message get. The
// trimming grants let an executor purge results and read any stored
// result by a direct get with a request body (the API subject cannot say
// which); executors are trusted with results anyway, they write them.
// Subscribe: its own inbox prefix and the jobs stream's consumer-created
// advisories.
func ExecutorPermissions(s Subjects) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			s.ResultsWildcard(),
			s.BulkWildcard(),
			s.DeadLetterWildcard(),
			s.JobsKeeper(),
			jsAPI + "CONSUMER.CREATE." + JobsStream + ".*." + s.Job("*"),
			jsAPI + "CONSUMER.LIST." + JobsStream,
			jsAPI + "CONSUMER.NAMES." + JobsStream,
			jsAPI + "CONSUMER.INFO." + JobsStream + ".*",
			jsAPI + "CONSUMER.MSG.NEXT." + JobsStream + ".*",
			jsAck + JobsStream + ".>",
			jsAPI + "CONSUMER.INFO." + AdvisoriesStream + "." + DeadLetterConsumer,
			jsAPI + "CONSUMER.MSG.NEXT." + AdvisoriesStream + "." + DeadLetterConsumer,
			jsAck + AdvisoriesStream + "." + DeadLetterConsumer + ".>",
			jsAPI + "STREAM.INFO." + JobsStream,
			jsAPI + "STREAM.MSG.GET." + JobsStream,
			jsAPI + "STREAM.MSG.DELETE." + JobsStream,
			// Following the cancel marks (an ordered consumer).
			jsAPI + "STREAM.INFO." + CancelsStream,
			jsAPI + "CONSUMER.CREATE." + CancelsStream + ".>",
			jsAPI + "CONSUMER.INFO." + CancelsStream + ".*",
			jsAPI + "CONSUMER.DELETE." + CancelsStream + ".*",
			jsAPI + "CONSUMER.MSG.NEXT." + CancelsStream + ".*",
			// The shared destination rate schedules (RatesBucket); creating
			// the bucket reads the account info first.
			"$KV." + RatesBucket + ".>",
			jsAPI + "INFO",
			jsAPI + "STREAM.INFO.KV_" + RatesBucket,
			jsAPI + "STREAM.CREATE.KV_" + RatesBucket,
			jsAPI + "STREAM.UPDATE.KV_" + RatesBucket,
			jsAPI + "DIRECT.GET.KV_" + RatesBucket + ".>",
			jsAPI + "STREAM.MSG.GET.KV_" + RatesBucket,
			// Trimming the results stream (TrimResults).
			jsAPI + "STREAM.INFO." + ResultsStream,
			jsAPI + "CONSUMER.LIST." + ResultsStream,
			jsAPI + "STREAM.PURGE." + ResultsStream,
			jsAPI + "DIRECT.GET." + ResultsStream,
			jsAPI + "DIRECT.GET." + ResultsStream + "." + s.RecordOf("*", "*"),
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{inboxSub(RoleExecutor, ""), JobsConsumerCreatedSubject()}},
	}
}

// RuntimePermissions are the runtime service's permissions under prefix s.
//
// Subscribe: <prefix>.rpc.> in queue group "runtime" only (a plain
// subscription, which would see every call, is refused), $SRV.> for micro
// discovery, its inbox. Publish: replies to inbox subjects only: "_INBOX.>"
// (requesters in the pipeline account) and "_R_.>" (the reply subjects the
// server gives requests arriving through a service import, routed back to
// the requester's account). Not allow_responses: that would let a request
// whose reply subject is a stream subject or a JetStream API call make the
// runtime publish there.
func RuntimePermissions(s Subjects) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{"_INBOX.>", "_R_.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			s.RPCGroup() + ".> " + RPCQueueGroup,
			"$SRV.>",
			inboxSub(RoleRuntime, ""),
		}},
	}
}

// CallerPermissions let a client call runtime functions: publish
// <prefix>.rpc.*, subscribe its own inbox prefix for the replies.
func CallerPermissions(s Subjects) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{s.RPCGroup() + ".*"}},
		Subscribe: &server.SubjectPermission{Allow: []string{inboxSub(RoleCaller, "")}},
	}
}

// AdminPermissions are the provisioner's and operator tools' permissions:
// the whole JetStream API (create and update streams and consumers, list and
// get messages), micro discovery requests ($SRV.>), and publishing jobs and
// dead letters (dead-letter replay). Subscribe: its own inbox prefix.
func AdminPermissions(s Subjects) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			jsAPI + ">",
			"$SRV.>",
			s.JobsWildcard(),
			s.DeadLetterWildcard(),
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{inboxSub(RoleAdmin, "")}},
	}
}

// TLSFiles names PEM files for TLS. For a connecting role (ConnConfig.TLS):
// CAFile verifies the server, CertFile and KeyFile are the client certificate
// (mutual TLS). For the embedded server (ServerConfig.TLS): CertFile and
// KeyFile are the server certificate, and CAFile, when set, makes the server
// require client certificates signed by it.
type TLSFiles struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// serverOptions applies t to server options.
func (t *TLSFiles) serverOptions(opts *server.Options) error {
	if t.CertFile == "" || t.KeyFile == "" {
		return fmt.Errorf("tls: the server needs cert_file and key_file")
	}
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: t.CertFile,
		KeyFile:  t.KeyFile,
		CaFile:   t.CAFile,
		Verify:   t.CAFile != "",
	})
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	opts.TLSConfig = tc
	opts.TLS = true
	opts.TLSVerify = t.CAFile != ""
	opts.TLSTimeout = 2
	return nil
}
