// Package faults holds the process-level fault tests: they build the
// pipeline binary, run its roles as real OS processes, kill them (SIGKILL
// where a crash is the point, SIGTERM for drains) and check the promise to
// clients: every start-fetch that got `enqueued` ends with exactly one
// result or error frame. FAULT_JOBS sets the job count of the executor-kill
// run (default 2000; the README's fault run uses 10000).
package faults
