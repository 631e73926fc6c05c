// Command runtime-func serves a user function, "reverse", next to the
// runtime's built-ins over NATS (pipeline.rpc.reverse) and HTTP
// (POST /rpc/reverse).
//
//	go run ./examples/runtime-func                       # embedded NATS, serve until Ctrl-C
//	go run ./examples/runtime-func -nats nats://127.0.0.1:4222
//	go run ./examples/runtime-func -once                 # call it once over each transport, then exit
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/runtime"
)

// reverse is the user function: it reverses a UTF-8 string.
func reverse(_ context.Context, req []byte) ([]byte, error) {
	if !utf8.Valid(req) {
		return nil, broker.Errorf(broker.CodeBadRequest, "the body must be UTF-8 text")
	}
	runes := []rune(string(req))
	for i, j := 0, len(runes)-1; i < j; i, j = i+1, j-1 {
		runes[i], runes[j] = runes[j], runes[i]
	}
	return []byte(string(runes)), nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "runtime-func:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, or with -once makes one call over each
// transport and returns.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("runtime-func", flag.ContinueOnError)
	natsURL := fs.String("nats", "", "NATS URL; empty: an embedded server on a free loopback port")
	listen := fs.String("listen", "127.0.0.1:0", "HTTP listen address")
	once := fs.Bool("once", false, "call reverse once over NATS and HTTP, then exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := zerolog.Nop()

	nc, closeNATS, err := connect(ctx, *natsURL)
	if err != nil {
		return err
	}
	defer closeNATS()

	// The runtime: the built-ins plus reverse, over NATS and HTTP.
	reg := runtime.NewRegistry(runtime.Limits{})
	if err := reg.Register("reverse", reverse); err != nil {
		return err
	}
	svc, err := runtime.New(nc, runtime.Config{Registry: reg, Logger: log})
	if err != nil {
		return err
	}
	if err := svc.Start(ctx); err != nil {
		return err
	}
	hs := runtime.NewHTTPServer(runtime.HTTPConfig{Addr: *listen, Registry: reg, Logger: log})
	if err := hs.Start(ctx); err != nil {
		return errors.Join(err, svc.Shutdown(context.Background()))
	}
	fmt.Fprintf(out, "serving %s and %s/rpc/reverse\n", broker.Subjects{}.RPC("reverse"), hs.URL())

	if *once {
		err = callOnce(ctx, nc, hs.URL(), out)
	} else {
		<-ctx.Done()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(err, hs.Shutdown(sctx), svc.Shutdown(sctx))
}

// connect connects to url, or to an embedded server on a free loopback port
// when url is empty. The returned func closes what connect opened.
func connect(ctx context.Context, url string) (*nats.Conn, func(), error) {
	if url != "" {
		nc, err := broker.Connect(ctx, broker.ConnConfig{URLs: url, Name: "runtime-func"})
		if err != nil {
			return nil, nil, err
		}
		return nc, nc.Close, nil
	}
	dir, err := os.MkdirTemp("", "runtime-func-*")
	if err != nil {
		return nil, nil, err
	}
	ns, err := broker.NewServer(broker.ServerConfig{Host: "127.0.0.1", Port: -1, MonitorPort: -2, StoreDir: dir})
	if err == nil {
		err = ns.Start(ctx)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	stopServer := func() { _ = ns.Shutdown(context.Background()); os.RemoveAll(dir) }
	nc, err := broker.Connect(ctx, broker.ConnConfig{InProcess: ns, Name: "runtime-func"})
	if err != nil {
		stopServer()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); stopServer() }, nil
}

// callOnce calls reverse over NATS request-reply and over HTTP.
func callOnce(ctx context.Context, nc *nats.Conn, baseURL string, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, broker.Subjects{}.RPC("reverse"), []byte("stressed"))
	if err != nil {
		return fmt.Errorf("nats call: %w", err)
	}
	fmt.Fprintf(out, "nats: %s\n", msg.Data)

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/rpc/reverse", bytes.NewReader([]byte("drawer")))
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http call: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("http call: %w", err)
	}
	fmt.Fprintf(out, "http: %d %s\n", resp.StatusCode, body)
	return nil
}
