package runtime_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/runtime"
)

// Serve a user function next to the built-ins over NATS, and call it with
// request-reply: the subject is <prefix>.rpc.<name>, bad input comes back
// as a micro error with code 400.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// An embedded NATS server on a free loopback port (no monitoring).
	dir, err := os.MkdirTemp("", "runtime-example-*")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ns, err := broker.NewServer(broker.ServerConfig{Host: "127.0.0.1", Port: -1, MonitorPort: -2, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	if err := ns.Start(ctx); err != nil {
		panic(err)
	}
	defer ns.Shutdown(context.Background())
	nc, err := broker.Connect(ctx, broker.ConnConfig{InProcess: ns, Name: "example"})
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	// The registry: echo, transform, compute, and greet.
	reg := runtime.NewRegistry(runtime.Limits{})
	err = reg.Register("greet", func(_ context.Context, req []byte) ([]byte, error) {
		if len(req) == 0 {
			return nil, broker.Errorf(broker.CodeBadRequest, "say who to greet")
		}
		return append([]byte("hello, "), req...), nil
	})
	if err != nil {
		panic(err)
	}
	svc, err := runtime.New(nc, runtime.Config{Registry: reg})
	if err != nil {
		panic(err)
	}
	if err := svc.Start(ctx); err != nil {
		panic(err)
	}
	defer svc.Shutdown(ctx)

	subject := broker.Subjects{}.RPC("greet") // "pipeline.rpc.greet"
	reply, err := nc.RequestWithContext(ctx, subject, []byte("Ada"))
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s: %s\n", subject, reply.Data)

	reply, err = nc.RequestWithContext(ctx, subject, nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(reply.Header.Get(micro.ErrorCodeHeader), reply.Header.Get(micro.ErrorHeader))

	reply, err = nc.RequestWithContext(ctx, broker.Subjects{}.RPC(runtime.FnTransform), []byte(`{"data":"ada"}`))
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", reply.Data)
	// Output:
	// pipeline.rpc.greet: hello, Ada
	// 400 say who to greet
	// {"data":"ADA","length":3}
}
