package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/origin"
)

func TestDefaultsDecode(t *testing.T) {
	c := Default()
	if c.Origin.Listen != "127.0.0.1:8080" || c.Target.Listen != "127.0.0.1:8090" || c.NATS.Port != 4222 {
		t.Fatalf("defaults %+v do not match PROTOCOL.md", c)
	}
	if c.Streams.AckWait != 30*time.Second || c.Executor.Retry.BaseDelay != 100*time.Millisecond {
		t.Errorf("durations: ack_wait %v base_delay %v", c.Streams.AckWait, c.Executor.Retry.BaseDelay)
	}
	c.AllowTarget()
	if len(c.Executor.Policy.Allow) != 1 || c.Executor.Policy.Allow[0] != "127.0.0.1:8090" {
		t.Errorf("policy allow = %v, want exactly the bundled target", c.Executor.Policy.Allow)
	}
}

// TestTargetAllowEntryFollowsTheTarget: the executors may reach the bundled
// target where target.listen says, and nothing is allowed for it when the
// target is disabled.
func TestTargetAllowEntryFollowsTheTarget(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		want    []string
	}{
		{"default", nil, []string{"127.0.0.1:8090"}},
		{"moved", []string{"PIPELINE_TARGET_LISTEN=127.0.0.1:9555"}, []string{"127.0.0.1:9555"}},
		{"disabled", []string{"PIPELINE_TARGET_ENABLED=false"}, nil},
		{"free port: allowed once it runs", []string{"PIPELINE_TARGET_LISTEN=127.0.0.1:0"}, nil},
		{"kept with others", []string{"PIPELINE_EXECUTOR_POLICY_ALLOW=api.example.com"}, []string{"api.example.com", "127.0.0.1:8090"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load("", tt.environ)
			if err != nil {
				t.Fatal(err)
			}
			c.AllowTarget()
			c.AllowTarget() // idempotent
			if !slices.Equal(c.Executor.Policy.Allow, tt.want) {
				t.Fatalf("allow = %v, want %v", c.Executor.Policy.Allow, tt.want)
			}
		})
	}
}

func TestPrecedenceFileThenEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte("origin:\n  id: fromfile\n  listen: 127.0.0.1:9000\nexecutor:\n  concurrency: 7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, []string{
		"PIPELINE_ORIGIN_ID=fromenv",
		"PIPELINE_STREAMS_ACK_WAIT=2s",
		"PIPELINE_EXECUTOR_POLICY_ALLOW=127.0.0.1:1,10.0.0.0/8",
		"UNRELATED=1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Origin.ID != "fromenv" || c.Origin.Listen != "127.0.0.1:9000" || c.Executor.Concurrency != 7 {
		t.Errorf("got id %q listen %q concurrency %d", c.Origin.ID, c.Origin.Listen, c.Executor.Concurrency)
	}
	if c.Streams.AckWait != 2*time.Second || len(c.Executor.Policy.Allow) != 2 {
		t.Errorf("got ack_wait %v allow %v", c.Streams.AckWait, c.Executor.Policy.Allow)
	}
}

func TestBadInputIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	_ = os.WriteFile(path, []byte("origin:\n  lisen: typo\n"), 0o600)
	if _, err := Load(path, nil); err == nil {
		t.Error("unknown key accepted, want an error")
	}
	for _, env := range []string{"PIPELINE_ORIGIN_NOPE=1", "PIPELINE_EXECUTOR_CONCURRENCY=many", "PIPELINE_STREAMS_ACK_WAIT=soon"} {
		if _, err := Load("", []string{env}); err == nil {
			t.Errorf("%s accepted, want an error", env)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml"), nil); err == nil {
		t.Error("missing file accepted")
	}
}

// TestRefusalLimitSettings: the refusal limit is on by default with
// loopback exempt, and the environment can turn it off or empty the
// exemptions (as the flood measurement does).
func TestRefusalLimitSettings(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Origin.RefusalsPerSource != origin.DefaultRefusalsPerSource || c.Origin.RefusalBlock != 10*time.Second ||
		c.Origin.RefusalWindow != 10*time.Second || len(c.Origin.RefusalExempt) != 2 {
		t.Errorf("defaults: %+v", c.Origin.RefusalLimits)
	}
	c, err = Load("", []string{"PIPELINE_ORIGIN_REFUSALS_PER_SOURCE=0", "PIPELINE_ORIGIN_REFUSAL_EXEMPT=", "PIPELINE_ORIGIN_REFUSAL_BLOCK=1m"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Origin.RefusalsPerSource != 0 || len(c.Origin.RefusalExempt) != 0 || c.Origin.RefusalBlock != time.Minute {
		t.Errorf("from the environment: %+v", c.Origin.RefusalLimits)
	}
}
