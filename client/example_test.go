package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/client"
	"github.com/pipeline-dev/pipeline/internal/stack"
)

// exampleStack starts a whole pipeline in-process on free 127.0.0.1 ports
// (what `pipeline up --embedded-nats` runs) and returns its WebSocket URL and
// test target URL. In real use these are e.g. ws://127.0.0.1:8080/ws and
// http://127.0.0.1:8090.
func exampleStack() (originWS, target string, stop func()) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := stack.StartEphemeral(ctx, zerolog.Nop())
	if err != nil {
		log.Fatal(err)
	}
	return st.OriginWS(), st.TargetURL(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = st.Shutdown(ctx)
	}
}

// Fetch a URL through the pipeline under a key of your own: fetching again
// under the same key returns the first job's result, and the target is
// called once.
func Example() {
	originWS, target, stop := exampleStack()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, originWS) // add client.WithToken(...) if the origin has one
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	res, err := c.Fetch(ctx, client.Request{URL: target + "/delay?ms=5", Key: "order-42"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d %q duplicate=%v\n", res.Status, res.Body, res.Duplicate)

	again, err := c.Fetch(ctx, client.Request{URL: target + "/delay?ms=5", Key: "order-42"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d same job=%v duplicate=%v\n", again.Status, again.Job == res.Job, again.Duplicate)
	// Output:
	// 200 "delayed 5 ms\n" duplicate=false
	// 200 same job=true duplicate=true
}

// Start many fetches without waiting for each, then collect the results.
func ExampleClient_Go() {
	originWS, target, stop := exampleStack()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, originWS)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	var started []*client.Pending
	for n := range 3 {
		p, err := c.Go(ctx, client.Request{URL: fmt.Sprintf("%s/bytes?n=%d", target, n+1)})
		if err != nil {
			log.Fatal(err)
		}
		started = append(started, p)
	}
	for _, p := range started {
		res, err := p.Wait(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(res.Status, string(res.Body))
	}
	// Output:
	// 200 a
	// 200 ab
	// 200 abc
}

// Errors the origin reports are *client.Error values carrying the wire
// code.
func ExampleError() {
	originWS, _, stop := exampleStack()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, originWS)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// The destination policy denies private addresses.
	_, err = c.Fetch(ctx, client.Request{URL: "http://10.1.2.3/"})
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code)
	}
	// Output: blocked_destination
}

// Call a function of the runtime through the origin's /call endpoint.
func ExampleClient_Call() {
	originWS, _, stop := exampleStack()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, originWS)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	out, err := c.Call(ctx, "transform", []byte(`{"data":"héllo"}`), client.ViaNATS)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
	// Output: {"data":"HÉLLO","length":6}
}

// Cancel a job that has not run yet: its fetch finishes with a canceled
// error, and the destination is never called.
func ExampleClient_Cancel() {
	originWS, target, stop := exampleStack()
	defer stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, originWS)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Not before a minute from now.
	p, err := c.Go(ctx, client.Request{URL: target + "/delay", Key: "report-7", Delay: time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	<-p.Enqueued() // the origin stored the job
	if err := c.Cancel(ctx, client.Key("report-7")); err != nil {
		log.Fatal(err)
	}
	_, err = p.Wait(ctx)
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Code)
	}
	// Output: canceled
}
