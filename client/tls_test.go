package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pipeline-dev/pipeline/client"
)

// TestTLS dials wss:// through a TLS-terminating reverse proxy in front of
// the origin: the WebSocket and Call (https, derived from the wss URL) both
// use the configured TLS config.
func TestTLS(t *testing.T) {
	st := startStack(t, nil)
	u, err := url.Parse(st.OriginHTTP())
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(httputil.NewSingleHostReverseProxy(u))
	t.Cleanup(ts.Close)
	wss := "wss://" + strings.TrimPrefix(ts.URL, "https://") + "/ws"
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if c, err := client.Dial(ctx, wss); err == nil {
		c.Close()
		t.Fatal("dial without trusting the test CA: want a certificate error")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	c := dial(t, wss, client.WithTLSConfig(&tls.Config{RootCAs: pool}))
	res, err := c.Fetch(ctx, client.Request{URL: st.TargetURL() + "/delay"})
	if err != nil || res.Status != 200 {
		t.Fatalf("fetch over wss: %+v %v", res, err)
	}
	if out, err := c.Call(ctx, "echo", []byte("over https"), client.ViaDirect); err != nil || string(out) != "over https" {
		t.Fatalf("call over https: %q %v", out, err)
	}
}
