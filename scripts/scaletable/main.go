// Command scaletable prints the scale-out benchmark table from loadgen JSON
// reports (PROTOCOL.md §5) named scale-N.json, N being the executor count:
//
//	go run ./scripts/scaletable bench/scale/scale-1.json bench/scale/scale-2.json
//
// It prints a Markdown table: executors, throughput, speed-up over the first
// row, p50, p99, errors.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// report is the part of a loadgen fetch report the table shows.
type report struct {
	Requests      int64   `json:"requests"`
	Errors        int64   `json:"errors"`
	ThroughputRPS float64 `json:"throughput_rps"`
	LatencyMS     struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: scaletable scale-N.json...")
		os.Exit(2)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "scaletable:", err)
		os.Exit(1)
	}
}

func run(files []string) error {
	fmt.Println("| executors | throughput (fetches/s) | speed-up | p50 ms | p99 ms | errors |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|")
	var first float64
	for _, f := range files {
		n, err := executors(f)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read report: %w", err)
		}
		var r report
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		if first == 0 {
			first = r.ThroughputRPS
		}
		speedup := 0.0
		if first > 0 {
			speedup = r.ThroughputRPS / first
		}
		fmt.Printf("| %d | %.0f | %.2fx | %.2f | %.2f | %d of %d |\n",
			n, r.ThroughputRPS, speedup, r.LatencyMS.P50, r.LatencyMS.P99, r.Errors, r.Requests)
	}
	return nil
}

// executors reads N from a file named scale-N.json.
func executors(path string) (int, error) {
	base := strings.TrimSuffix(filepath.Base(path), ".json")
	n, err := strconv.Atoi(strings.TrimPrefix(base, "scale-"))
	if err != nil {
		return 0, fmt.Errorf("%s: want a file named scale-N.json", path)
	}
	return n, nil
}
