package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pipeline-dev/pipeline/internal/config"
	"github.com/pipeline-dev/pipeline/internal/stacktest"
	"github.com/pipeline-dev/pipeline/loadgen"
)

// TestRPCWithTokens runs `loadgen rpc` against a pipeline whose origin
// (/call) and runtime (/rpc/<fn>) both require bearer tokens: with --token
// and --runtime-token every path works, http-raw included; without them
// the run stops at the preflight with HTTP 401 and names the flag; the
// tokens also come from PIPELINE_ORIGIN_AUTH_TOKEN and
// PIPELINE_RUNTIME_AUTH_TOKEN, and never appear in the report.
func TestRPCWithTokens(t *testing.T) {
	st := stacktest.Start(t, func(c *config.Config) {
		c.Origin.AuthToken = "origin-t0ken"
		c.Runtime.AuthToken = "runtime-t0ken"
	}, zerolog.Nop())
	base := []string{"rpc", "--caller", st.OriginHTTP(), "--runtime", st.RuntimeHTTP(), "--fn", "echo",
		"--payload", "100B", "--iterations", "5", "--warmup", "-1", "--quiet", "--log-level", "error"}
	all := []string{"--via", "direct,nats,http,http-raw"}

	t.Run("flags", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, append(append(base, all...), "--token", "origin-t0ken",
			"--runtime-token", "runtime-t0ken", "--json", "-")...)
		if code != exitOK {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		var rep loadgen.RPCReport
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("report: %v\n%s", err, stdout)
		}
		if len(rep.Cases) != 4 || rep.Runtime != st.RuntimeHTTP() {
			t.Fatalf("got %d cases, runtime %q; want 4 and %s", len(rep.Cases), rep.Runtime, st.RuntimeHTTP())
		}
		for _, c := range rep.Cases {
			if c.OK != 5 || c.Errors != 0 {
				t.Errorf("via %s: %d ok, %d errors (%s), want 5 and 0", c.Via, c.OK, c.Errors, c.LastError)
			}
		}
		if strings.Contains(stdout+stderr, "t0ken") {
			t.Errorf("a token appears in the output:\n%s\n%s", stdout, stderr)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv(envOriginToken, "origin-t0ken")
		t.Setenv(envRuntimeToken, "runtime-t0ken")
		if code, _, stderr := runCLI(t, append(base, all...)...); code != exitOK {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
	})
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no caller token", []string{"--via", "direct"}, "HTTP 401: missing or wrong bearer token (pass --token)"},
		{"wrong caller token", []string{"--via", "http", "--token", "nope"}, "(check --token)"},
		{"no runtime token", []string{"--via", "http-raw"}, "(pass --runtime-token)"},
		{"wrong runtime token", []string{"--via", "http-raw", "--runtime-token", "nope"}, "(check --runtime-token)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(envOriginToken, "")
			t.Setenv(envRuntimeToken, "")
			code, _, stderr := runCLI(t, append(base, c.args...)...)
			if code != exitFailed || !strings.Contains(stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr, exitFailed, c.want)
			}
		})
	}
}
