package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pipeline-dev/pipeline/internal/config"
)

// execute runs the root command with args and returns its output.
func execute(t *testing.T, environ []string, args ...string) string {
	t.Helper()
	root := newRootCmd(environ)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("pipeline %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// builtin reports whether cobra added cmd (help, completion).
func builtin(cmd *cobra.Command) bool {
	return cmd.Name() == "help" || cmd.Name() == "completion" || cmd.HasParent() && builtin(cmd.Parent())
}

// TestHelpListsEverySubcommandWithExamples runs `pipeline --help` and
// `pipeline <cmd> --help` for every command (nested ones too) and checks
// that each is listed by its parent and shows an example of itself.
func TestHelpListsEverySubcommandWithExamples(t *testing.T) {
	root := newRootCmd(nil)
	var walk func(parent *cobra.Command, path []string)
	walk = func(parent *cobra.Command, path []string) {
		help := execute(t, nil, append(path, "--help")...)
		if parent.Runnable() || len(path) == 0 {
			if !strings.Contains(help, "Examples:") {
				t.Errorf("pipeline %s --help has no Examples section", strings.Join(path, " "))
			}
			want := strings.Join(append([]string{"pipeline"}, path...), " ")
			if !strings.Contains(parent.Example, want) {
				t.Errorf("examples of %q do not show %q:\n%s", want, want, parent.Example)
			}
		}
		for _, sub := range parent.Commands() {
			if builtin(sub) || sub.Hidden {
				continue
			}
			if !strings.Contains(help, "\n  "+sub.Name()+" ") {
				t.Errorf("pipeline %s --help does not list %q:\n%s", strings.Join(path, " "), sub.Name(), help)
			}
			if sub.Short == "" {
				t.Errorf("%s has no short description", sub.CommandPath())
			}
			walk(sub, append(append([]string{}, path...), sub.Name()))
		}
	}
	walk(root, nil)

	// The contract's commands are all there.
	help := execute(t, nil, "--help")
	for _, name := range []string{"up", "origin", "executor", "runtime", "target", "nats", "version", "config", "dlq"} {
		if !strings.Contains(help, "\n  "+name+" ") {
			t.Errorf("pipeline --help does not list %q", name)
		}
	}
	for _, s := range []string{"PIPELINE_<SECTION>_<KEY>", "--config", "/metrics", "/readyz", "--log-level"} {
		if !strings.Contains(help, s) {
			t.Errorf("pipeline --help does not mention %q", s)
		}
	}
}

func TestVersionPrintsTheVersion(t *testing.T) {
	out := execute(t, nil, "version")
	if !strings.HasPrefix(out, "pipeline "+version) || !strings.HasSuffix(out, "\n") {
		t.Errorf("pipeline version printed %q, want \"pipeline %s ...\"", out, version)
	}
}

// TestSettingsPrecedence checks what the help and configs/pipeline.yaml
// say: defaults < --config file < PIPELINE_* environment < flags.
func TestSettingsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(file, []byte("executor:\n  concurrency: 100\n  ops_listen: 127.0.0.1:9999\nlog:\n  level: warn\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"PIPELINE_EXECUTOR_CONCURRENCY=200", "PIPELINE_LOG_LEVEL=error", "HOME=/nowhere"}
	cases := []struct {
		name      string
		file      string
		environ   []string
		args      []string
		wantConc  int
		wantLevel string
		wantOps   string
	}{
		{"defaults", "", nil, nil, config.Default().Executor.Concurrency, "info", "127.0.0.1:9091"},
		{"file", file, nil, nil, 100, "warn", "127.0.0.1:9999"},
		{"environment over file", file, env, nil, 200, "error", "127.0.0.1:9999"},
		{"flags over environment", file, env, []string{"--concurrency", "300", "--ops-listen", "127.0.0.1:0"}, 300, "error", "127.0.0.1:0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := &options{environ: c.environ, configFile: c.file}
			f := &flagSet{fs: pflag.NewFlagSet("executor", pflag.ContinueOnError)}
			f.integer("concurrency", "", func(c *config.Config) *int { return &c.Executor.Concurrency })
			f.str("ops-listen", "", func(c *config.Config) *string { return &c.Executor.OpsListen })
			if err := f.fs.Parse(c.args); err != nil {
				t.Fatal(err)
			}
			got, log, err := o.load(f, func(*config.Config) {})
			if err != nil {
				t.Fatal(err)
			}
			if got.Executor.Concurrency != c.wantConc || got.Log.Level != c.wantLevel || got.Executor.OpsListen != c.wantOps {
				t.Errorf("got concurrency %d, log level %q, ops %q; want %d, %q, %q",
					got.Executor.Concurrency, got.Log.Level, got.Executor.OpsListen, c.wantConc, c.wantLevel, c.wantOps)
			}
			if log.GetLevel().String() != c.wantLevel {
				t.Errorf("logger level %s, want %s", log.GetLevel(), c.wantLevel)
			}
		})
	}
	// --log-level beats the environment.
	o := &options{environ: env, configFile: file, logLevel: "debug"}
	got, _, err := o.load(&flagSet{fs: pflag.NewFlagSet("x", pflag.ContinueOnError)}, func(*config.Config) {})
	if err != nil || got.Log.Level != "debug" {
		t.Errorf("--log-level debug with PIPELINE_LOG_LEVEL=error: got %q (%v), want debug", got.Log.Level, err)
	}
	// A misspelt variable is an error, not silently ignored.
	o = &options{environ: []string{"PIPELINE_EXECUTOR_CONCURENCY=5"}}
	if _, _, err := o.load(&flagSet{fs: pflag.NewFlagSet("x", pflag.ContinueOnError)}, func(*config.Config) {}); err == nil {
		t.Error("PIPELINE_EXECUTOR_CONCURENCY: want a no-such-setting error")
	}
}

// TestInstalledBinariesRun builds ./cmd/... as `go install` would and runs
// the binaries' help and version.
func TestInstalledBinariesRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binaries; skipped with -short")
	}
	gobin := t.TempDir()
	cmd := exec.Command("go", "install", "github.com/pipeline-dev/pipeline/cmd/...")
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install ./cmd/...: %v\n%s", err, out)
	}
	exe := func(name string) string {
		if runtime.GOOS == "windows" {
			name += ".exe"
		}
		return filepath.Join(gobin, name)
	}
	for _, run := range []struct {
		bin  string
		args []string
		want string
	}{
		{"pipeline", []string{"version"}, "pipeline " + version},
		{"pipeline", []string{"--help"}, "Available Commands:"},
		{"pipeline", []string{"executor", "--help"}, "--ops-listen"},
		{"loadgen", []string{"--help"}, "--concurrency"},
	} {
		out, err := exec.Command(exe(run.bin), run.args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), run.want) {
			t.Errorf("%s %s: %v, output lacks %q:\n%s", run.bin, strings.Join(run.args, " "), err, run.want, out)
		}
	}
}
