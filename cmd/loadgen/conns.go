package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/pipeline-dev/pipeline/internal/logging"
	"github.com/pipeline-dev/pipeline/loadgen"
)

const connsLong = `loadgen conns measures what an origin spends per idle WebSocket connection.

It reads the origin's memory from its /metrics (process RSS, Go heap and
goroutine stacks in use), opens --connections connections (waiting for each
one's hello), reads again, closes them, reads, opens them again and reads a
last time. It reports the cost per connection from a cold start, and after
that warm-up round. Run it on the origin's machine: it needs one file
descriptor per connection (the origin too).`

const connsExample = `  # against 'pipeline up --embedded-nats' on this machine
  loadgen conns --connections 10000

  # an origin with a token, JSON for the record
  loadgen conns --origin ws://127.0.0.1:8081/ws --token "$TOKEN" --json conns.json`

// newConnsCmd returns `loadgen conns`.
func newConnsCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		cfg      loadgen.ConnsConfig
		jsonPath string
		log      logFlags
	)
	cmd := &cobra.Command{
		Use:     "conns",
		Short:   "Measure the origin's memory per idle WebSocket connection",
		Long:    connsLong,
		Example: connsExample,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Connections <= 0 {
				return fmt.Errorf("--connections %d: must be positive", cfg.Connections)
			}
			l, err := logging.New(stderr, log.level, log.format)
			if err != nil {
				return err
			}
			cfg.Logger = l
			rep, err := loadgen.Conns(cmd.Context(), cfg)
			if err != nil {
				fmt.Fprintln(stderr, "loadgen conns:", err)
				return status(exitFailed)
			}
			writeJSON := func(w io.Writer) error {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			switch jsonPath {
			case "":
			case "-":
				return writeJSON(stdout)
			default:
				if err := writeFile(jsonPath, writeJSON); err != nil {
					fmt.Fprintln(stderr, "loadgen conns:", err)
					return status(exitFailed)
				}
			}
			fmt.Fprintf(stdout, "%d idle connections to %s\n", rep.Connections, cfg.Origin)
			fmt.Fprintf(stdout, "  first round, per connection:  RSS %.1f KB  (Go heap %.1f KB + stacks %.1f KB)\n",
				rep.RSSPerConnKB, rep.HeapPerConnKB, rep.StackPerConnKB)
			fmt.Fprintf(stdout, "  second round, per connection: RSS %.1f KB over the memory left after closing; heap + stacks %.1f KB over the start\n",
				rep.SecondRSSPerConnKB, rep.SecondHeapStackPerConnKB)
			fmt.Fprintf(stdout, "  origin RSS: %.0f MB before, %.0f MB with %d open\n", rep.Before.RSSBytes/1e6, rep.FirstRound.RSSBytes/1e6, rep.Connections)
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.Origin, "origin", loadgen.DefaultOrigin, "origin WebSocket `URL`")
	fs.IntVar(&cfg.Connections, "connections", 10_000, "idle connections to hold")
	fs.StringVar(&cfg.MetricsURL, "metrics", "", "the origin's Prometheus `URL` (default /metrics on the origin's host)")
	fs.StringVar(&cfg.Token, "token", "", "the origin's bearer token, if it needs one")
	fs.StringVar(&jsonPath, "json", "", "write the report as JSON to `FILE`; - for stdout")
	log.register(fs)
	return cmd
}
