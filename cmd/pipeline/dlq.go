package main

import (
	"context"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/config"
)

func newDLQCmd(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List and replay jobs in the dead-letter queue (jobs that exhausted their deliveries)",
		Example: `  pipeline dlq list --nats nats://127.0.0.1:4222
  pipeline dlq replay 17 18 --nats nats://127.0.0.1:4222
  pipeline dlq replay --all`,
	}
	var natsURL string
	var limit int
	cmd.PersistentFlags().StringVar(&natsURL, "nats", broker.DefaultURL, "NATS server URL(s)")
	connect := func(ctx context.Context) (jetstream.JetStream, broker.Subjects, func(), error) {
		c, err := config.Load(o.configFile, o.environ)
		if err != nil {
			return nil, broker.Subjects{}, nil, err
		}
		if cmd.PersistentFlags().Changed("nats") || c.NATS.URL == "" {
			c.NATS.URL = natsURL
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		cc, err := c.NATS.ConnConfig("pipeline dlq", broker.RoleAdmin, "")
		if err != nil {
			return nil, broker.Subjects{}, nil, err
		}
		nc, err := broker.Connect(cctx, cc)
		if err != nil {
			return nil, broker.Subjects{}, nil, err
		}
		js, err := jetstream.New(nc)
		if err != nil {
			nc.Close()
			return nil, broker.Subjects{}, nil, fmt.Errorf("jetstream: %w", err)
		}
		return js, broker.Subjects{Prefix: c.NATS.SubjectPrefix}, nc.Close, nil
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List dead jobs, oldest first",
		Example: `  pipeline dlq list --nats nats://127.0.0.1:4222
  pipeline dlq list --nats nats://127.0.0.1:4222 --limit 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			js, _, closeFn, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			defer closeFn()
			dead, err := broker.ListDeadLetters(cmd.Context(), js, limit)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "SEQ\tJOB\tORIGIN\tDELIVERIES\tDEAD AT\tMETHOD\tURL")
			for _, d := range dead {
				job := d.Job
				if job == nil {
					fmt.Fprintf(w, "%d\t(undecodable)\t\t%d\t%s\t\t\n", d.Seq, d.Deliveries, d.DeadAt.Format(time.RFC3339))
					continue
				}
				fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Seq, job.ID, job.Origin, d.Deliveries, d.DeadAt.Format(time.RFC3339), job.Method, job.URL)
			}
			if err := w.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "%d dead job(s)\n", len(dead))
			return nil
		},
	}
	list.Flags().IntVar(&limit, "limit", 1000, "at most this many entries")
	var all bool
	replay := &cobra.Command{
		Use:   "replay [SEQ...]",
		Short: "Re-enqueue dead jobs under new job ids (their results are kept for get-result)",
		Example: `  pipeline dlq replay --nats nats://127.0.0.1:4222 17 18   # by stream sequence (see dlq list)
  pipeline dlq replay --nats nats://127.0.0.1:4222 --all`,
		RunE: func(cmd *cobra.Command, args []string) error {
			js, subjects, closeFn, err := connect(cmd.Context())
			if err != nil {
				return err
			}
			defer closeFn()
			var seqs []uint64
			if all {
				dead, err := broker.ListDeadLetters(cmd.Context(), js, 1<<30)
				if err != nil {
					return err
				}
				for _, d := range dead {
					seqs = append(seqs, d.Seq)
				}
			}
			for _, a := range args {
				n, err := strconv.ParseUint(a, 10, 64)
				if err != nil {
					return fmt.Errorf("replay: %q is not a sequence number", a)
				}
				seqs = append(seqs, n)
			}
			if len(seqs) == 0 {
				return fmt.Errorf("replay: give sequence numbers (see `pipeline dlq list`) or --all")
			}
			for _, seq := range seqs {
				id, err := broker.ReplayDeadLetter(cmd.Context(), js, subjects, seq)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d\treplayed as job %s\n", seq, id)
			}
			return nil
		},
	}
	replay.Flags().BoolVar(&all, "all", false, "replay every dead job")
	cmd.AddCommand(list, replay)
	return cmd
}
