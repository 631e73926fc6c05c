// Command client-fetch uses the Go client (package client) against an
// origin: a fetch under a key and its duplicate, a delayed fetch, a
// cancelled fetch, and fetches (one running, one scheduled) that survive a
// restart of the origin.
//
//	go run ./examples/client-fetch                 # runs a pipeline in-process, restarts it midway
//	go run ./examples/client-fetch -origin ws://127.0.0.1:8080/ws -target http://127.0.0.1:8090
//
// Against an external origin (-origin) it skips the restart.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/client"
	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "client-fetch:", err)
		os.Exit(1)
	}
}

// run performs the fetches and prints what happened.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("client-fetch", flag.ContinueOnError)
	originURL := fs.String("origin", "", "origin WebSocket URL; empty: run a pipeline in-process")
	target := fs.String("target", "http://127.0.0.1:8090", "test target base URL (with -origin)")
	token := fs.String("token", "", "bearer token of the origin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var p *pipeline
	if *originURL == "" {
		var err error
		if p, err = startPipeline(ctx); err != nil {
			return err
		}
		defer p.stop()
		*originURL, *target = p.st.OriginWS(), p.st.TargetURL()
	}

	var opts []client.Option
	if *token != "" {
		opts = append(opts, client.WithToken(*token))
	}
	opts = append(opts, client.WithReconnectBackoff(20*time.Millisecond, time.Second))
	c, err := client.Dial(ctx, *originURL, opts...)
	if err != nil {
		return err
	}
	defer c.Close()

	// 1. A fetch under a key of ours; the same key again is the same job.
	key := fmt.Sprintf("client-fetch-%d", time.Now().UnixNano())
	res, err := c.Fetch(ctx, client.Request{URL: *target + "/delay?ms=5", Key: key})
	if err != nil {
		return fmt.Errorf("keyed fetch: %w", err)
	}
	again, err := c.Fetch(ctx, client.Request{URL: *target + "/delay?ms=5", Key: key})
	if err != nil {
		return fmt.Errorf("keyed fetch again: %w", err)
	}
	fmt.Fprintf(out, "keyed: %d %q; again: same job %v, duplicate %v\n", res.Status, res.Body, again.Job == res.Job, again.Duplicate)

	// 2. A fetch no executor runs before 200 ms have passed.
	start := time.Now()
	res, err = c.Fetch(ctx, client.Request{URL: *target + "/delay", Delay: 200 * time.Millisecond})
	if err != nil {
		return fmt.Errorf("delayed fetch: %w", err)
	}
	fmt.Fprintf(out, "delayed: %d after >= 200ms: %v\n", res.Status, time.Since(start) >= 200*time.Millisecond)

	// 3. Restart the origin while a fetch is in flight: the client
	// reconnects and collects the result by key.
	if p != nil {
		inFlight, err := c.Go(ctx, client.Request{URL: *target + "/delay?ms=300"})
		if err != nil {
			return fmt.Errorf("fetch across restart: %w", err)
		}
		// And one that is still scheduled while the origin is down.
		scheduled, err := c.Go(ctx, client.Request{URL: *target + "/delay?ms=1", Delay: time.Second})
		if err != nil {
			return fmt.Errorf("fetch across restart: %w", err)
		}
		for _, p := range []*client.Pending{inFlight, scheduled} {
			if err := waitConfirmed(ctx, p); err != nil {
				return err
			}
		}
		if err := p.restart(ctx); err != nil {
			return err
		}
		res, err = inFlight.Wait(ctx)
		if err != nil {
			return fmt.Errorf("fetch across restart: %w", err)
		}
		fmt.Fprintf(out, "across a restart: %d %q\n", res.Status, res.Body)
		if res, err = scheduled.Wait(ctx); err != nil {
			return fmt.Errorf("scheduled fetch across restart: %w", err)
		}
		fmt.Fprintf(out, "scheduled across a restart: %d %q\n", res.Status, res.Body)
	}

	// 4. Cancel a slow fetch once the origin has stored it.
	slow, err := c.Go(ctx, client.Request{URL: *target + "/delay?ms=2000"})
	if err != nil {
		return fmt.Errorf("slow fetch: %w", err)
	}
	if err := waitConfirmed(ctx, slow); err != nil {
		return err
	}
	if err := slow.Cancel(ctx); err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	_, err = slow.Wait(ctx)
	var e *client.Error
	if !errors.As(err, &e) {
		return fmt.Errorf("cancelled fetch: got %v, want a canceled error", err)
	}
	fmt.Fprintf(out, "cancel: %s\n", e.Code)

	return nil
}

// waitConfirmed waits until the origin has stored the fetch's job.
func waitConfirmed(ctx context.Context, p *client.Pending) error {
	select {
	case <-p.Enqueued():
		return nil
	case <-p.Done():
		_, err := p.Result()
		return fmt.Errorf("fetch finished before it was confirmed: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pipeline is a pipeline run in-process on fixed 127.0.0.1 ports and a data
// directory of its own, so that it can be restarted where the client
// expects it.
type pipeline struct {
	cfg config.Config
	dir string
	st  *stack.Stack
}

func startPipeline(ctx context.Context) (*pipeline, error) {
	dir, err := os.MkdirTemp("", "client-fetch-*")
	if err != nil {
		return nil, err
	}
	cfg := stack.EphemeralConfig()
	cfg.NATS.DataDir = dir
	for _, addr := range []*string{&cfg.Origin.Listen, &cfg.Target.Listen} {
		if *addr, err = freeAddr(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	p := &pipeline{cfg: cfg, dir: dir}
	if p.st, err = stack.Start(ctx, cfg, zerolog.Nop()); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start pipeline: %w", err)
	}
	return p, nil
}

// restart stops the whole pipeline and starts it again on the same ports
// and data.
func (p *pipeline) restart(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := p.st.Shutdown(sctx); err != nil {
		return fmt.Errorf("stop pipeline: %w", err)
	}
	st, err := stack.Start(ctx, p.cfg, zerolog.Nop())
	if err != nil {
		p.st = nil
		return fmt.Errorf("restart pipeline: %w", err)
	}
	p.st = st
	return nil
}

func (p *pipeline) stop() {
	if p.st != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = p.st.Shutdown(ctx)
	}
	_ = os.RemoveAll(p.dir)
}

// freeAddr returns a 127.0.0.1 address with a port that was free just now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
