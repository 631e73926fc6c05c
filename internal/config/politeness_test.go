package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDestinationSettings: executor.destinations, retry_after_max and
// circuit load from the file, and bad values are refused at load time with
// a message naming the key.
func TestDestinationSettings(t *testing.T) {
	good := `executor:
  destinations:
    - host: api.example.com
      rate: 50
      burst: 10
      concurrency: 16
    - {host: "127.0.0.1:8090", rate: 100}
  retry_after_max: 20s
  circuit:
    failures: 5
    cooldown: 2s
`
	c, err := Load(writeYAML(t, good), nil)
	if err != nil {
		t.Fatal(err)
	}
	e := c.Executor
	if len(e.Destinations) != 2 || e.Destinations[0].Rate != 50 || e.Destinations[0].Burst != 10 ||
		e.Destinations[0].Concurrency != 16 || e.Destinations[1].Host != "127.0.0.1:8090" {
		t.Errorf("destinations = %+v", e.Destinations)
	}
	if e.RetryAfterMax != 20*time.Second || e.Circuit.Failures != 5 || e.Circuit.Cooldown != 2*time.Second {
		t.Errorf("retry_after_max %v circuit %+v", e.RetryAfterMax, e.Circuit)
	}
	d := Default().Executor
	if d.RetryAfterMax != 60*time.Second || d.Circuit.Failures != 20 || d.Circuit.Cooldown != 30*time.Second {
		t.Errorf("defaults: retry_after_max %v circuit %+v", d.RetryAfterMax, d.Circuit)
	}

	bad := []struct{ name, yaml, want string }{
		{"negative rate", "executor:\n  destinations:\n    - {host: a.example, rate: -1}\n", "executor.destinations[0].rate"},
		{"negative burst", "executor:\n  destinations:\n    - {host: a.example, burst: -2}\n", "executor.destinations[0].burst"},
		{"negative concurrency", "executor:\n  destinations:\n    - {host: a.example}\n    - {host: b.example, concurrency: -1}\n", "executor.destinations[1].concurrency"},
		{"no host", "executor:\n  destinations:\n    - {rate: 5}\n", "executor.destinations[0].host"},
		{"repeated host", "executor:\n  destinations:\n    - {host: A.example}\n    - {host: a.example}\n", "executor.destinations[1].host"},
		{"url as host", "executor:\n  destinations:\n    - {host: \"http://a.example/\"}\n", "executor.destinations[0].host"},
		{"unknown key", "executor:\n  destinations:\n    - {host: a.example, rps: 5}\n", "rps"},
		{"unknown circuit key", "executor:\n  circuit:\n    failure: 5\n", "failure"},
		{"negative retry_after_max", "executor:\n  retry_after_max: -1s\n", "executor.retry_after_max"},
		{"negative cooldown", "executor:\n  circuit:\n    cooldown: -1s\n", "executor.circuit.cooldown"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeYAML(t, tt.yaml), nil)
			if err == nil {
				t.Fatalf("accepted, want an error naming %s", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not name %s", err, tt.want)
			}
		})
	}
	if _, err := Load("", []string{"PIPELINE_EXECUTOR_RETRY_AFTER_MAX=-5s"}); err == nil || !strings.Contains(err.Error(), "retry_after_max") {
		t.Errorf("negative retry_after_max from the environment: err = %v", err)
	}
}

func writeYAML(t *testing.T, s string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
