// Package executor consumes fetch jobs from the shared JetStream consumer,
// performs the outbound HTTP fetch under a destination policy and limits, and
// publishes each result on the originating origin's results subject. A job is
// acknowledged only after its result is stored, so a crashed executor loses
// nothing: the job is redelivered to another one.
package executor
