package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pipeline-dev/pipeline/loadgen"
)

// TestHelpListsFlagsAndExamples runs `loadgen --help` and `loadgen rpc
// --help` and checks that each exits 0, lists every flag of its command with
// its help and non-zero default, and shows examples of itself.
func TestHelpListsFlagsAndExamples(t *testing.T) {
	root := newRootCmd(io.Discard, io.Discard)
	rpc, _, err := root.Find([]string{"rpc"})
	if err != nil || rpc == root {
		t.Fatalf("loadgen has no rpc subcommand: %v", err)
	}
	for _, tc := range []struct {
		cmd  *cobra.Command
		args []string
		want []string // beyond the flags
	}{
		{root, []string{"--help"}, []string{"Examples:", "loadgen --embedded", "Load models:", "\n  rpc ", "(default 100)", "(default 10000)", "(default 30s)"}},
		{rpc, []string{"rpc", "--help"}, []string{"Examples:", "loadgen rpc --preset full", "nats-raw", "(default 1)", "(default 10s)", `(default "standard")`}},
	} {
		for _, args := range [][]string{tc.args, append(append([]string{}, tc.args[:len(tc.args)-1]...), "-h")} {
			var out, errb bytes.Buffer
			code := run(context.Background(), args, &out, &errb)
			help := errb.String()
			if code != exitOK || out.Len() != 0 {
				t.Errorf("loadgen %s: exit %d, stdout %q; want 0 and help on stderr only", strings.Join(args, " "), code, out.String())
			}
			if !strings.Contains(tc.cmd.Example, tc.cmd.CommandPath()+" ") {
				t.Errorf("examples of %q do not run it:\n%s", tc.cmd.CommandPath(), tc.cmd.Example)
			}
			for _, w := range tc.want {
				if !strings.Contains(help, w) {
					t.Errorf("loadgen %s lacks %q:\n%s", strings.Join(args, " "), w, help)
				}
			}
			n := 0
			tc.cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
				n++
				name, usage := pflag.UnquoteUsage(f)
				if !strings.Contains(help, "--"+f.Name+" "+name) || !strings.Contains(help, usage) {
					t.Errorf("loadgen %s does not list --%s %s (%s)", strings.Join(args, " "), f.Name, name, usage)
				}
			})
			if n < 15 {
				t.Errorf("%s has %d flags, want them all", tc.cmd.CommandPath(), n)
			}
		}
	}
}

// TestSingleDashLongFlagsFail documents the one change of the move to
// pflag: a long flag needs two dashes, and one dash fails loudly.
func TestSingleDashLongFlagsFail(t *testing.T) {
	for _, args := range [][]string{{"-concurrency", "5"}, {"rpc", "-fn", "echo"}} {
		code, stdout, stderr := runCLI(t, args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, "unknown shorthand flag") || !strings.Contains(stderr, "for usage") {
			t.Errorf("%v: exit %d, stderr %q; want %d and a pointer to usage", args, code, stderr, exitUsage)
		}
	}
}

func TestRPCUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--preset", "quick", "--iterations", "5"}, "--preset and --iterations both set"},
		{[]string{"--preset", "huge"}, `--preset: unknown preset "huge"`},
		{[]string{"--iterations", "0"}, "--iterations 0: must be positive"},
		{[]string{"--concurrency", "0"}, "--concurrency 0: must be positive"},
		{[]string{"--rounds", "-1"}, "--rounds -1: must be positive"},
		{[]string{"--timeout", "0s"}, "--timeout 0s: must be positive"},
		{[]string{"--payload", "1XB"}, "--payload: bad payload size"},
		{[]string{"stray"}, `unexpected argument "stray" (flags start with --)`},
		{[]string{"--no-such-flag"}, "unknown flag: --no-such-flag"},
	} {
		code, stdout, stderr := runCLI(t, append([]string{"rpc"}, tc.args...)...)
		if code != exitUsage || stdout != "" {
			t.Errorf("rpc %v: exit %d, stdout %q, want %d and nothing", tc.args, code, stdout, exitUsage)
		}
		if !strings.Contains(stderr, "loadgen rpc: "+tc.want) || !strings.Contains(stderr, "run 'loadgen rpc -h' for usage") {
			t.Errorf("rpc %v: stderr %q, want %q and a pointer to usage", tc.args, stderr, tc.want)
		}
	}
}

func TestRPCOptionDefaults(t *testing.T) {
	parse := func(args ...string) *rpcOptions {
		t.Helper()
		o := &rpcOptions{}
		fs := pflag.NewFlagSet("rpc", pflag.ContinueOnError)
		o.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		if err := o.validate(fs); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return o
	}
	o := parse()
	if o.iterations != 100 || o.concurrency != 1 || o.timeout != 10*time.Second || o.rounds != 1 ||
		o.caller != loadgen.DefaultCallerURL || o.natsURL != "nats://127.0.0.1:4222" || o.payloadSizes != nil {
		t.Errorf("defaults %+v", o)
	}
	o = parse("--preset", "quick", "--fn", "echo,compute", "--fn", "transform", "--payload", "1KB, 100B")
	if o.iterations != 20 || len(o.fns) != 3 || len(o.payloadSizes) != 2 || o.payloadSizes[0] != 1024 {
		t.Errorf("parsed %+v", o)
	}
	if o := parse("--iterations", "7"); o.iterations != 7 {
		t.Errorf("--iterations 7: got %d", o.iterations)
	}
}
