// Command politeprobe measures destination politeness through a running
// pipeline (scripts/politeness-bench.sh): per-fetch latency of N fetches,
// errors included (loadgen's percentiles count results only), and the
// Retry-After case, where a job waiting out a Retry-After must hold no
// executor slot while a fetch to another host goes through.
//
//	politeprobe lat -url URL [-n 1000] [-par 1]
//	politeprobe ra -held URL -other URL
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: politeprobe lat|ra [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	origin := fs.String("origin", "ws://127.0.0.1:8080/ws", "origin WebSocket URL")
	url := fs.String("url", "", "lat: URL to fetch")
	n := fs.Int("n", 1000, "lat: fetches")
	par := fs.Int("par", 1, "lat: fetches in flight")
	held := fs.String("held", "", "ra: URL answering 503 + Retry-After, then 200")
	other := fs.String("other", "", "ra: URL on another host")
	_ = fs.Parse(os.Args[2:])
	c, _, err := websocket.DefaultDialer.Dial(*origin, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	var hello map[string]any
	if err := c.ReadJSON(&hello); err != nil {
		log.Fatal(err)
	}
	switch os.Args[1] {
	case "lat":
		lat(c, *url, *n, *par)
	case "ra":
		retryAfter(c, *held, *other)
	default:
		log.Fatalf("unknown mode %q", os.Args[1])
	}
}

func start(c *websocket.Conn, id, url string) {
	if err := c.WriteJSON(map[string]any{"type": "start-fetch", "id": id, "url": url, "timeout_ms": 10000}); err != nil {
		log.Fatal(err)
	}
}

// final reads frames until a result or error frame.
func final(c *websocket.Conn) map[string]any {
	for {
		var f map[string]any
		if err := c.ReadJSON(&f); err != nil {
			log.Fatal(err)
		}
		if f["type"] == "result" || f["type"] == "error" {
			return f
		}
	}
}

func lat(c *websocket.Conn, url string, n, par int) {
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lats []time.Duration
	outcomes := map[string]int{}
	slots := make(chan struct{}, par)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			f := final(c)
			id, _ := f["id"].(string)
			mu.Lock()
			lats = append(lats, time.Since(sent[id]))
			if f["type"] == "error" {
				outcomes[fmt.Sprint(f["code"])]++
			} else {
				outcomes[fmt.Sprint(f["status"])]++
			}
			mu.Unlock()
			<-slots
		}
	}()
	begin := time.Now()
	for i := range n {
		slots <- struct{}{}
		id := "f" + strconv.Itoa(i)
		mu.Lock()
		sent[id] = time.Now()
		mu.Unlock()
		start(c, id, url)
	}
	<-done
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	q := func(p float64) float64 { return float64(lats[int(p*float64(len(lats)-1))].Microseconds()) / 1000 }
	fmt.Printf("%d fetches, %d in flight, %v: %v; latency ms p50 %.2f p99 %.2f max %.2f\n",
		n, par, time.Since(begin).Round(time.Millisecond), outcomes, q(0.5), q(0.99), q(1))
}

func retryAfter(c *websocket.Conn, held, other string) {
	begin := time.Now()
	start(c, "held", held)
	time.Sleep(200 * time.Millisecond) // the held job gets its 503 first
	start(c, "other", other)
	for range 2 {
		f := final(c)
		fmt.Printf("%-5s final at %7.1f ms: %v status=%v code=%v attempts=%v timing=%v\n", f["id"],
			float64(time.Since(begin).Microseconds())/1000, f["type"], f["status"], f["code"], f["attempts"], f["timing"])
	}
}
