package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

func TestCodeOf(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	tests := []struct {
		name string
		err  error
		want Code
	}{
		{"nil", nil, ""},
		{"typed", Errorf(CodeInvalidURL, "bad url %q", "x"), CodeInvalidURL},
		{"wrapped typed", fmt.Errorf("fetch: %w", WrapError(CodeFetchFailed, cause)), CodeFetchFailed},
		{"queue full sentinel", fmt.Errorf("store job: %w", ErrQueueFull), CodeQueueFull},
		{"max msgs", &jetstream.APIError{ErrorCode: jetstream.ErrorCode(server.JSStreamStoreFailedF), Description: server.ErrMaxMsgs.Error()}, CodeQueueFull},
		{"max bytes", &jetstream.APIError{ErrorCode: jetstream.ErrorCode(server.JSStreamStoreFailedF), Description: server.ErrMaxBytes.Error()}, CodeQueueFull},
		{"insufficient resources", &jetstream.APIError{ErrorCode: jetstream.ErrorCode(server.JSInsufficientResourcesErr)}, CodeQueueFull},
		{"other store failure", &jetstream.APIError{ErrorCode: jetstream.ErrorCode(server.JSStreamStoreFailedF), Description: "disk on fire"}, CodeInternal},
		{"deadline", fmt.Errorf("publish: %w", context.DeadlineExceeded), CodeTimeout},
		{"anything else", cause, CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CodeOf(tt.err); got != tt.want {
				t.Fatalf("CodeOf(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestErrorCarriesCause(t *testing.T) {
	cause := errors.New("refused")
	e := Errorf(CodeFetchFailed, "connect: %w", cause)
	if !errors.Is(e, cause) {
		t.Fatalf("errors.Is(%v, cause) = false, want true", e)
	}
	if got, want := e.Error(), "fetch_failed: connect: refused"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if got := ErrorOf(cause); got.Code != CodeInternal || got.Message != "refused" || !errors.Is(got, cause) {
		t.Fatalf("ErrorOf(plain) = %+v, want internal with the cause's message", got)
	}
	if got := ErrorOf(fmt.Errorf("x: %w", e)); got != e {
		t.Fatalf("ErrorOf(wrapped *Error) = %p, want the same *Error %p", got, e)
	}
	if WrapError(CodeTimeout, nil) != nil || ErrorOf(nil) != nil {
		t.Fatal("nil in, want nil out")
	}
}
