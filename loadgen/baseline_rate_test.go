package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestBaselineRateFollowsSchedule checks that an open-loop baseline sends on
// the pipeline run's schedule instead of as fast as it can.
func TestBaselineRateFollowsSchedule(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer srv.Close()
	res, err := RunBaseline(context.Background(), BaselineConfig{TargetURL: srv.URL, Rate: 200, Requests: 100, Concurrency: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK != 100 {
		t.Fatalf("ok = %d, want 100", res.OK)
	}
	// 100 requests at 200/s are due over 495 ms; closed loop takes a few ms.
	if res.Duration < 450*time.Millisecond {
		t.Errorf("took %v, want about 500 ms at 200/s", res.Duration)
	}
}
