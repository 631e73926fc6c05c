package stack

import (
	"context"
	"net/http"

	"github.com/nats-io/nats.go"

	"github.com/pipeline-dev/pipeline/broker"
)

// startRuntime starts the runtime micro service and its HTTP side when
// enabled. (Wired to internal/rpc.)
func (s *Stack) startRuntime(ctx context.Context, subjects broker.Subjects) error {
	return nil
}

// originHandlers are the extra routes the origin serves (the /call caller).
func (s *Stack) originHandlers(nc *nats.Conn, subjects broker.Subjects) map[string]http.Handler {
	return nil
}
