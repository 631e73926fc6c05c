// Package origin serves WebSocket sessions and turns client start-fetch frames
// into fetch jobs stored in JetStream. It reads its own results subject
// through a durable consumer and runs each job's continuation, registered by
// name, exactly once per job: pushing the result frame to the client is the
// default continuation. It also mounts the /call caller for RPC delegation.
package origin
