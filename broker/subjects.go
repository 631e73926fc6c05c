package broker

import (
	"fmt"
	"strings"
)

// Stream and consumer names (PROTOCOL.md §2).
const (
	// JobsStream holds fetch jobs (work-queue retention).
	JobsStream = "PIPELINE_JOBS"
	// ResultsStream holds fetch results, one subject per job
	// (Subjects.ResultOf): their origin reads them through its consumer, and
	// they stay after it acknowledged them, for get-result, until
	// TrimResults drops them (result retention).
	ResultsStream = "PIPELINE_RESULTS"
	// DefaultPrefix is the default subject prefix.
	DefaultPrefix = "pipeline"
	// RPCQueueGroup is the queue group every runtime endpoint subscribes in,
	// so that each request goes to exactly one runtime instance.
	RPCQueueGroup = "runtime"
)

// Subjects derives every subject name from one prefix. The zero value uses
// DefaultPrefix.
type Subjects struct {
	Prefix string
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// Job is the subject a job for origin originID is published on.
func (s Subjects) Job(originID string) string { return s.prefix() + ".jobs.fetch." + originID }

// JobsWildcard is the jobs stream's subject: every job subject, and
// JobsKeeper.
func (s Subjects) JobsWildcard() string { return s.prefix() + ".jobs.>" }

// JobsKeeper is the subject of the jobs stream's keeper messages
// (KeepJobsBlock): in the stream, but outside every jobs consumer's filter,
// so no executor receives one and no origin may publish one.
func (s Subjects) JobsKeeper() string { return s.prefix() + ".jobs.keep" }

// Result is origin originID's plain results subject (PROTOCOL.md §2). A
// result published there is stored as ResultOf(originID, LegacyResultToken)
// and read like any other; this project's executors publish each result on
// ResultOf instead, so that it is also the job's finished record.
func (s Subjects) Result(originID string) string { return s.prefix() + ".results." + originID }

// LegacyResultToken is the job token under which the results stream stores
// results published on the plain subject Subjects.Result. No job id is "_".
const LegacyResultToken = "_"

// ResultOf is the subject the result of job jobID of origin originID is
// published and kept on: the results stream answers get-result from it
// (the last message on it, by direct get). jobID must be a valid token
// (ValidateToken); results of other ids go to Result.
func (s Subjects) ResultOf(originID, jobID string) string {
	return s.prefix() + ".results." + originID + "." + jobID
}

// ResultsFilter matches every result stored for origin originID on its
// small lane (ResultOf): its results consumer's filter (OriginConsumer).
func (s Subjects) ResultsFilter(originID string) string { return s.ResultOf(originID, "*") }

// BulkResultBytes is the encoded size from which an executor stores a
// result on the bulk lane (BulkResultOf) rather than the small one, when
// its job says the origin reads that lane (Job.BulkLane).
const BulkResultBytes = 64 << 10

// BulkResultOf is the subject a large result (BulkResultBytes and more) of
// job jobID of origin originID is kept on: the bulk lane, which the origin
// reads through a consumer of its own (OriginBulkConsumer), so that a small
// result never waits behind large ones. A job has one record on either lane
// (RecordOf), never both.
func (s Subjects) BulkResultOf(originID, jobID string) string {
	return s.prefix() + ".bulk." + originID + "." + jobID
}

// BulkResultsFilter matches every result stored for origin originID on
// its bulk lane: its bulk consumer's filter (OriginBulkConsumer).
func (s Subjects) BulkResultsFilter(originID string) string { return s.BulkResultOf(originID, "*") }

// RecordOf is the wildcard that matches job jobID's record on either lane
// (ResultOf and BulkResultOf, and nothing else in the results stream): a
// direct get of its last message reads the record, and FirstRecord checks
// it, so that the two lanes hold one record per job between them.
func (s Subjects) RecordOf(originID, jobID string) string {
	return s.prefix() + ".*." + originID + "." + jobID
}

// RecordsFilter matches every record of origin originID, on both lanes.
func (s Subjects) RecordsFilter(originID string) string { return s.RecordOf(originID, "*") }

// RecordJob returns the job id of a record subject of origin originID (a
// ResultOf or BulkResultOf subject), and false for any other subject.
func (s Subjects) RecordJob(originID, subject string) (string, bool) {
	for _, lane := range []string{s.ResultOf(originID, ""), s.BulkResultOf(originID, "")} {
		if job, ok := strings.CutPrefix(subject, lane); ok && job != "" && !strings.Contains(job, ".") {
			return job, true
		}
	}
	return "", false
}

// ResultsSubjects are the results stream's subjects: the plain per-origin
// subject and the per-job ones of both lanes.
func (s Subjects) ResultsSubjects() []string {
	return []string{s.Result("*"), s.ResultOf("*", "*"), s.BulkResultOf("*", "*")}
}

// JobOrigin returns the origin id a job subject (<prefix>.jobs.fetch.<id>)
// belongs to, and false when subject is not a job subject of this prefix.
// With per-role permissions only origin <id> may publish on that subject, so
// the subject, not the job's Origin field (chosen by whoever published it),
// says which origin a job came from: an executor must publish the result
// only for that origin.
func (s Subjects) JobOrigin(subject string) (string, bool) {
	id, ok := strings.CutPrefix(subject, s.Job(""))
	if !ok || ValidateToken("origin id", id) != nil {
		return "", false
	}
	return id, true
}

// ResultsWildcard matches every results subject of the small lane and the
// plain results subjects; BulkWildcard matches the bulk lane's.
func (s Subjects) ResultsWildcard() string { return s.prefix() + ".results.>" }

// BulkWildcard matches every subject of the bulk lane (BulkResultOf).
func (s Subjects) BulkWildcard() string { return s.prefix() + ".bulk.>" }

// RPCGroup is the micro service endpoint group for runtime functions.
func (s Subjects) RPCGroup() string { return s.prefix() + ".rpc" }

// RPC is the subject runtime function fn is served on: "<prefix>.rpc.<fn>".
// fn should be a valid token (see ValidateToken); RPC does not check it.
func (s Subjects) RPC(fn string) string { return s.prefix() + ".rpc." + fn }

// OriginConsumer is the durable consumer name origin originID reads its
// results through.
func OriginConsumer(originID string) string { return "origin-" + originID }

// OriginBulkConsumer is the durable consumer name origin originID reads its
// bulk lane (BulkResultOf) through.
func OriginBulkConsumer(originID string) string { return "bulk-" + originID }

// ValidateToken reports whether v can be used as one NATS subject token (an
// origin id or a prefix segment): non-empty, at most 64 characters, only
// letters, digits, '-' and '_'.
func ValidateToken(kind, v string) error {
	if v == "" || len(v) > 64 {
		return fmt.Errorf("%s %q: must be 1..64 characters", kind, v)
	}
	if strings.IndexFunc(v, func(r rune) bool {
		return !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) >= 0 {
		return fmt.Errorf("%s %q: only letters, digits, '-' and '_' are allowed", kind, v)
	}
	return nil
}
