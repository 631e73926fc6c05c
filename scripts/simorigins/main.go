// Command simorigins stands in for N origins (s1..sN) for
// scripts/fairshare-bench.sh: it creates their jobs consumers, as an origin
// does at start, and with -rate publishes jobs for them round robin for
// -duration. It connects without credentials (a local `pipeline up`).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pipeline-dev/pipeline/broker"
)

func main() {
	url := flag.String("nats", "nats://127.0.0.1:27422", "NATS server URL")
	n := flag.Int("origins", 1, "simulated origins")
	rate := flag.Float64("rate", 0, "jobs/s in total; 0 = idle")
	dur := flag.Duration("duration", 20*time.Second, "how long to run")
	target := flag.String("target", "http://127.0.0.1:27090/delay?ms=0", "URL the jobs fetch")
	flag.Parse()
	nc, err := nats.Connect(*url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := broker.Subjects{}
	for i := 1; i <= *n; i++ {
		if _, err := broker.EnsureJobsConsumer(ctx, js, s, fmt.Sprintf("s%d", i)); err != nil {
			log.Fatalf("origin s%d: %v", i, err)
		}
	}
	if *rate <= 0 {
		time.Sleep(*dur)
		return
	}
	every := time.Duration(float64(time.Second) / *rate)
	tick := time.NewTicker(every)
	defer tick.Stop()
	end := time.Now().Add(*dur)
	k := 0
	for time.Now().Before(end) {
		<-tick.C
		o := fmt.Sprintf("s%d", k%*n+1)
		j := &broker.Job{ID: fmt.Sprintf("sim-%d-%d", time.Now().UnixNano(), k), Origin: o, URL: *target, Method: "GET", ReceivedAt: time.Now().UnixNano()}
		data, _ := j.Encode()
		if _, err := js.PublishAsync(s.Job(o), data, jetstream.WithMsgID(j.ID)); err != nil {
			log.Fatal(err)
		}
		k++
	}
	<-js.PublishAsyncComplete()
	fmt.Println("published", k)
}
