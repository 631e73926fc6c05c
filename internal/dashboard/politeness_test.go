package dashboard

import (
	"testing"

	"github.com/pipeline-dev/pipeline/executor"
	"github.com/pipeline-dev/pipeline/internal/metrics"
)

// The dashboard shows the executors' politeness state: jobs waiting for a
// rate slot or a Retry-After, holds by reason, open circuits, and the top
// hosts from the in-memory counters (never from metric labels).
func TestStatsShowPoliteness(t *testing.T) {
	m := metrics.New()
	em := executor.MetricsOf(m)
	em.Waiting(executor.WaitRate, 3)
	em.Waiting(executor.WaitRetryAfter, 1)
	em.Held(executor.WaitCircuit)
	em.Held(executor.WaitCircuit)
	em.Held(executor.WaitRate)
	em.RateTokens(7)
	d, err := New(Config{Gatherer: m.Gatherer(), Hosts: func(n int) []executor.HostStats {
		return []executor.HostStats{{Host: "api.example.com:443", Circuit: "open", CircuitRefused: 2}}[:min(n, 1)]
	}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.WaitingRate != 3 || st.WaitingRetryAfter != 1 || st.RateTokens != 7 {
		t.Errorf("waiting rate %v retry-after %v tokens %v, want 3 1 7", st.WaitingRate, st.WaitingRetryAfter, st.RateTokens)
	}
	if st.HeldByReason[executor.WaitCircuit] != 2 || st.HeldByReason[executor.WaitRate] != 1 {
		t.Errorf("held by reason %v", st.HeldByReason)
	}
	if len(st.TopHosts) != 1 || st.TopHosts[0].Circuit != "open" {
		t.Errorf("top hosts %+v", st.TopHosts)
	}
}
