package loadgen

import (
	"context"
	"testing"
	"time"
)

func TestConnsMeasuresTheOrigin(t *testing.T) {
	noLeaks(t)
	s := startStack(t, nil)
	const n = 200
	rep, err := Conns(context.Background(), ConnsConfig{
		Origin:      s.OriginWS(),
		Connections: n,
		Settle:      100 * time.Millisecond,
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Fatalf("Conns: %v", err)
	}
	if rep.Connections != n || rep.Mode != "conns" {
		t.Fatalf("report %+v, want %d connections in mode conns", rep, n)
	}
	// Each open session runs a goroutine of its own (its reader); a few
	// transient ones in the first reading may have ended since.
	if got := rep.FirstRound.Goroutines - rep.Before.Goroutines; got < n-20 {
		t.Errorf("goroutines grew by %v with %d connections open, want about %d", got, n, n)
	}
	if rep.Before.RSSBytes <= 0 || rep.FirstRound.HeapInuseBytes <= 0 || rep.StackPerConnKB <= 0 {
		t.Errorf("readings %+v: want positive memory figures", rep)
	}
}

func TestConnsFailsWithoutMetrics(t *testing.T) {
	noLeaks(t)
	s := startStack(t, nil)
	_, err := Conns(context.Background(), ConnsConfig{
		Origin:      s.OriginWS(),
		MetricsURL:  s.TargetURL() + "/echo",
		Connections: 1,
		Settle:      time.Millisecond,
	})
	if err == nil {
		t.Fatal("Conns with a URL that serves no metrics succeeded, want an error")
	}
}
