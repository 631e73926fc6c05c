package broker

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// NATS accounts (nats.auth on). Permissions inside one account cannot stop
// reply reflection: anything that answers a request (the runtime, the
// JetStream API itself) publishes to whatever reply subject the requester
// chose. Accounts can: an account's subjects, streams and JetStream API are
// invisible to every other account except what it exports, and a service
// import's replies are routed back to the requester only. So:
//
//   - PipelineAccount holds the shared streams (jobs, results, dead letters),
//     the executors, the runtime and the admin: the trusted roles.
//   - Each origin is alone in its own account, OriginAccount(id), with its own
//     JetStream (its delayed-jobs stream, size-capped by the account's
//     limits). From the pipeline account it imports exactly: its own jobs
//     and cancel subjects and its own results subjects (PubAcks flow back),
//     the info and pull (MSG.NEXT, streamed responses) of its own results
//     consumer and the direct get of its own results under
//     PipelineAPIPrefix, the acks of that consumer, and the runtime's
//     subjects.
//   - The caller is alone in CallerAccount and imports the runtime only.
//
// Each export names the one account allowed to import it, so an origin
// cannot import another origin's subjects even with a hand-written config.
const (
	// PipelineAccount is the account of the shared streams and the trusted
	// roles (admin, executor, runtime).
	PipelineAccount = "PIPELINE"
	// CallerAccount is the account of the caller role.
	CallerAccount = "CALLER"
	// PipelineAPIPrefix is where an origin account sees the pipeline
	// account's JetStream API for its own results consumer
	// (jetstream.NewWithAPIPrefix). Only that consumer's info and pull are
	// imported there.
	PipelineAPIPrefix = "JS.pipeline.API"
	// DefaultOriginMaxStore caps each origin account's JetStream storage
	// (file and memory, bytes) when AuthConfig.OriginMaxStore is zero: room
	// for its delayed-jobs stream (default 256 MiB) with three replicas, and
	// more.
	DefaultOriginMaxStore = 4 << 30
)

// OriginAccount is the NATS account of origin originID.
func OriginAccount(originID string) string { return "ORIGIN_" + originID }

// ServerConf renders the `accounts` block of a nats-server configuration
// file that gives a standalone server (or each cluster node) the same
// accounts, users, permissions, exports and imports as the embedded server
// (ServerAccounts). Passwords appear as `$ENV` references for
// Credentials.PasswordEnv and as quoted strings for Credentials.Password.
// configs/auth/nats-server.conf is this output for its example users; a test
// keeps them equal. It fails like ServerAccounts.
func (a AuthConfig) ServerConf(s Subjects) (string, error) {
	return a.serverConf(s, func(c Credentials) (string, error) {
		if c.Password != "" {
			return strconv.Quote(c.Password), nil
		}
		if c.PasswordEnv == "" {
			return "", fmt.Errorf("user %q: no password (set password or password_env)", c.User)
		}
		if strings.IndexFunc(c.PasswordEnv, func(r rune) bool {
			return !(r == '_' || r >= '0' && r <= '9' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z')
		}) >= 0 {
			return "", fmt.Errorf("user %q: password_env %q is not a plain variable name", c.User, c.PasswordEnv)
		}
		return "$" + c.PasswordEnv, nil
	})
}

// ServerAccounts returns the embedded server's accounts and users
// (ServerConfig.Accounts and ServerConfig.Users): the configuration of
// ServerConf, parsed by nats-server itself, with each user's password read
// from Credentials (Password, else the PasswordEnv variable; never written
// into the configuration text). It returns nils when auth is disabled. It
// fails with ErrAuthConfig (wrapped) when a configured user lacks a password,
// two roles share a user name, an origin id is not a valid subject token, or
// no user is configured at all.
func (a AuthConfig) ServerAccounts(s Subjects) ([]*server.User, []*server.Account, error) {
	if !a.Enabled {
		return nil, nil, nil
	}
	const placeholder = `"-"`
	conf, err := a.serverConf(s, func(Credentials) (string, error) { return placeholder, nil })
	if err != nil {
		return nil, nil, err
	}
	var opts server.Options
	if err := opts.ProcessConfigString(conf); err != nil {
		return nil, nil, fmt.Errorf("%w: accounts: %v", ErrAuthConfig, err)
	}
	byUser := make(map[string]Credentials)
	for _, ru := range a.roleUsers(s) {
		byUser[ru.creds.User] = ru.creds
	}
	for _, u := range opts.Users {
		pw, err := byUser[u.Username].secret()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrAuthConfig, err)
		}
		u.Password = pw
	}
	return opts.Users, opts.Accounts, nil
}

// roleUser is one configured role's user.
type roleUser struct {
	role    Role
	id      string // origin id
	account string
	creds   Credentials
	perms   *server.Permissions
}

// roleUsers lists the roles that have credentials, origins sorted by id.
func (a AuthConfig) roleUsers(s Subjects) []roleUser {
	list := []roleUser{
		{RoleAdmin, "", PipelineAccount, a.Admin, AdminPermissions(s)},
		{RoleExecutor, "", PipelineAccount, a.Executor, ExecutorPermissions(s)},
		{RoleRuntime, "", PipelineAccount, a.Runtime, RuntimePermissions(s)},
		{RoleCaller, "", CallerAccount, a.Caller, CallerPermissions(s)},
	}
	for _, id := range a.originIDs() {
		list = append(list, roleUser{RoleOrigin, id, OriginAccount(id), a.Origins[id], OriginPermissions(s, id)})
	}
	out := list[:0]
	for _, ru := range list {
		if !ru.creds.empty() {
			out = append(out, ru)
		}
	}
	return out
}

// originIDs are the configured origin ids, sorted.
func (a AuthConfig) originIDs() []string {
	ids := make([]string, 0, len(a.Origins))
	for id := range a.Origins {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// OriginIDs are the origins that have credentials, sorted: the origins
// whose results consumers the admin provisions in the pipeline account
// (StreamsConfig.Tenants). Nil when auth is disabled.
func (a AuthConfig) OriginIDs() []string {
	if !a.Enabled {
		return nil
	}
	var ids []string
	for _, id := range a.originIDs() {
		if !a.Origins[id].empty() {
			ids = append(ids, id)
		}
	}
	return ids
}

// serverConf renders the accounts block, each password by pw.
func (a AuthConfig) serverConf(s Subjects, pw func(Credentials) (string, error)) (string, error) {
	for _, id := range a.originIDs() {
		if err := ValidateToken("origin id", id); err != nil {
			return "", fmt.Errorf("%w: %v", ErrAuthConfig, err)
		}
	}
	users := a.roleUsers(s)
	if len(users) == 0 {
		return "", fmt.Errorf("%w: auth is enabled but no user is configured", ErrAuthConfig)
	}
	seen := make(map[string]string, len(users))
	byAccount := make(map[string][]roleUser)
	var origins []string
	caller := false
	for _, ru := range users {
		name := string(ru.role) + originSuffix(ru.role, ru.id)
		if ru.creds.User == "" {
			return "", fmt.Errorf("%w: role %s has a password but no user", ErrAuthConfig, name)
		}
		if other, dup := seen[ru.creds.User]; dup {
			return "", fmt.Errorf("%w: user %q is configured for both %s and %s", ErrAuthConfig, ru.creds.User, other, name)
		}
		seen[ru.creds.User] = name
		byAccount[ru.account] = append(byAccount[ru.account], ru)
		switch ru.role {
		case RoleOrigin:
			origins = append(origins, ru.id)
		case RoleCaller:
			caller = true
		}
	}
	maxStore := a.OriginMaxStore
	if maxStore <= 0 {
		maxStore = DefaultOriginMaxStore
	}

	var b strings.Builder
	b.WriteString("accounts {\n")
	// The pipeline account: shared streams, trusted roles, exports.
	fmt.Fprintf(&b, "  %s {\n    jetstream: enabled\n", PipelineAccount)
	if err := writeUsers(&b, byAccount[PipelineAccount], pw); err != nil {
		return "", err
	}
	var rpcImporters []string
	for _, id := range origins {
		rpcImporters = append(rpcImporters, OriginAccount(id))
	}
	if caller {
		rpcImporters = append(rpcImporters, CallerAccount)
	}
	b.WriteString("    exports = [\n")
	if len(rpcImporters) > 0 {
		b.WriteString("      # the runtime's functions; replies go back to the caller only\n")
		fmt.Fprintf(&b, "      {service: %q, accounts: [%s]}\n", s.RPCGroup()+".*", quoteList(rpcImporters))
	}
	for _, id := range origins {
		acc := quoteList([]string{OriginAccount(id)})
		fmt.Fprintf(&b, "      # origin %s: its jobs, cancel marks and canceled records (the PubAcks flow back), its results consumer, direct gets of its results, its acks\n", id)
		for _, e := range originExports(s, id) {
			if e.streamed {
				fmt.Fprintf(&b, "      {service: %q, response_type: stream, accounts: [%s]}\n", e.subject, acc)
			} else {
				fmt.Fprintf(&b, "      {service: %q, accounts: [%s]}\n", e.subject, acc)
			}
		}
	}
	b.WriteString("    ]\n  }\n")
	if caller {
		fmt.Fprintf(&b, "  %s {\n", CallerAccount)
		if err := writeUsers(&b, byAccount[CallerAccount], pw); err != nil {
			return "", err
		}
		b.WriteString("    imports = [\n")
		fmt.Fprintf(&b, "      {service: {account: %s, subject: %q}}\n", PipelineAccount, s.RPCGroup()+".*")
		b.WriteString("    ]\n  }\n")
	}
	for _, id := range origins {
		acc := OriginAccount(id)
		fmt.Fprintf(&b, "  %s {\n", strconv.Quote(acc))
		b.WriteString("    # its own delayed-jobs stream, nothing else\n")
		fmt.Fprintf(&b, "    jetstream: {max_mem: %d, max_file: %d, max_streams: 2, max_consumers: 8}\n", maxStore, maxStore)
		if err := writeUsers(&b, byAccount[acc], pw); err != nil {
			return "", err
		}
		b.WriteString("    imports = [\n")
		fmt.Fprintf(&b, "      {service: {account: %s, subject: %q}}\n", PipelineAccount, s.RPCGroup()+".*")
		for _, e := range originExports(s, id) {
			if e.to != "" {
				fmt.Fprintf(&b, "      {service: {account: %s, subject: %q}, to: %q}\n", PipelineAccount, e.subject, e.to)
			} else {
				fmt.Fprintf(&b, "      {service: {account: %s, subject: %q}}\n", PipelineAccount, e.subject)
			}
		}
		b.WriteString("    ]\n  }\n")
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// export is one service the pipeline account exports to one origin.
type export struct {
	subject  string // in the pipeline account
	to       string // in the origin's account, if different
	streamed bool   // many responses per request (pulls)
}

// originExports are the services origin originID imports from the pipeline
// account.
func originExports(s Subjects, originID string) []export {
	direct := "DIRECT.GET." + ResultsStream + "." + s.RecordsFilter(originID)
	exports := []export{
		{subject: s.Job(originID)},
		{subject: s.Cancel(originID, "*")},
		{subject: s.ResultsFilter(originID)},
		{subject: jsAPI + direct, to: PipelineAPIPrefix + "." + direct},
	}
	// Its two results consumers: the small lane and the bulk lane.
	for _, cons := range []string{OriginConsumer(originID), OriginBulkConsumer(originID)} {
		info := "CONSUMER.INFO." + ResultsStream + "." + cons
		next := "CONSUMER.MSG.NEXT." + ResultsStream + "." + cons
		exports = append(exports,
			export{subject: jsAPI + info, to: PipelineAPIPrefix + "." + info},
			export{subject: jsAPI + next, to: PipelineAPIPrefix + "." + next, streamed: true},
			export{subject: jsAck + ResultsStream + "." + cons + ".>"})
	}
	return exports
}

// writeUsers writes a users list with permissions.
func writeUsers(b *strings.Builder, users []roleUser, pw func(Credentials) (string, error)) error {
	b.WriteString("    users = [\n")
	for _, ru := range users {
		p, err := pw(ru.creds)
		if err != nil {
			return fmt.Errorf("%w: role %s%s: %v", ErrAuthConfig, ru.role, originSuffix(ru.role, ru.id), err)
		}
		fmt.Fprintf(b, "      {\n        user: %q\n        password: %s\n", ru.creds.User, p)
		b.WriteString("        permissions: {\n")
		writeAllow(b, "publish", ru.perms.Publish.Allow)
		writeAllow(b, "subscribe", ru.perms.Subscribe.Allow)
		if ru.perms.Response != nil {
			b.WriteString("          allow_responses: true\n")
		}
		b.WriteString("        }\n      }\n")
	}
	b.WriteString("    ]\n")
	return nil
}

// writeAllow writes one allow list, one subject a line when long.
func writeAllow(b *strings.Builder, kind string, subjects []string) {
	if len(subjects) <= 3 {
		fmt.Fprintf(b, "          %s: {allow: [%s]}\n", kind, quoteList(subjects))
		return
	}
	fmt.Fprintf(b, "          %s: {allow: [\n", kind)
	for _, sub := range subjects {
		fmt.Fprintf(b, "            %s\n", strconv.Quote(sub))
	}
	b.WriteString("          ]}\n")
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, v := range l {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}
