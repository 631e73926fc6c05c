package client_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/client"
	"github.com/pipeline-dev/pipeline/internal/testutil"
)

func TestCancel(t *testing.T) {
	st := startStack(t, nil)
	c := dial(t, st.OriginWS())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := fmt.Sprintf("cancel-%d-", time.Now().UnixNano())
	wantCode := func(t *testing.T, err error, code client.Code) {
		t.Helper()
		var e *client.Error
		if !errors.As(err, &e) || e.Code != code {
			t.Fatalf("got %v, want a *client.Error %s", err, code)
		}
	}

	t.Run("scheduled by key: never fetched", func(t *testing.T) {
		key := run + "scheduled"
		p, err := c.Go(ctx, client.Request{URL: st.TargetURL() + "/count?tag=" + key, Key: key, Delay: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		waitEnqueued(t, p)
		if err := c.Cancel(ctx, client.Key(key)); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		_, err = p.Wait(ctx)
		wantCode(t, err, client.CodeCanceled)
		if n := seen(t, st.TargetURL(), key)[key]; n != 0 {
			t.Errorf("target saw a canceled scheduled job %d times", n)
		}
		wantCode(t, c.Cancel(ctx, client.Key(key)), client.CodeAlreadyFinished)
	})

	t.Run("running by job", func(t *testing.T) {
		key := run + "running"
		p, err := c.Go(ctx, client.Request{URL: st.TargetURL() + "/count?ms=5000&tag=" + key, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		waitEnqueued(t, p)
		// Running: the target has the request.
		testutil.Eventually(t, 10*time.Second, func() bool { return seen(t, st.TargetURL(), key)[key] == 1 },
			"fetch never reached the target")
		start := time.Now()
		if err := c.Cancel(ctx, client.Job(p.Job())); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		_, err = p.Wait(ctx)
		wantCode(t, err, client.CodeCanceled)
		if took := time.Since(start); took > 4*time.Second {
			t.Errorf("the running fetch was not aborted: it ended after %s", took)
		}
	})

	t.Run("finished", func(t *testing.T) {
		res, err := c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/delay"})
		if err != nil {
			t.Fatal(err)
		}
		wantCode(t, c.Cancel(ctx, client.Job(res.Job)), client.CodeAlreadyFinished)
		wantCode(t, c.Cancel(ctx, client.Key(res.Key)), client.CodeAlreadyFinished)
	})

	t.Run("unknown", func(t *testing.T) {
		wantCode(t, c.Cancel(ctx, client.Key(run+"nobody")), client.CodeNotFound)
		wantCode(t, c.Cancel(ctx, client.Job("no-such-job")), client.CodeNotFound)
	})

	t.Run("bad ref (client side)", func(t *testing.T) {
		wantCode(t, c.Cancel(ctx, client.Key("")), client.CodeBadRequest)
		wantCode(t, c.Cancel(ctx, nil), client.CodeBadRequest)
	})
}
