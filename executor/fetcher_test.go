package executor

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pipeline-dev/pipeline/broker"
	"github.com/pipeline-dev/pipeline/internal/netpolicy"
)

// TestFetchBodyBounds fetches bodies around the body cap from a real HTTP
// server, with and without an announced length, and with lengths that lie:
// every body is kept whole up to the cap, cut and marked truncated past it,
// and a body shorter than announced is an error, never a padded body.
func TestFetchBodyBounds(t *testing.T) {
	const limit = 4096
	body := func(n int) []byte { return bytes.Repeat([]byte("abcdefgh"), n/8+1)[:n] }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		b := body(n)
		switch r.URL.Path {
		case "/length": // Content-Length announced
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(b)
		case "/chunked": // no length: flushed in pieces
			for len(b) > 0 {
				k := min(len(b), 1000)
				_, _ = w.Write(b[:k])
				w.(http.Flusher).Flush()
				b = b[k:]
			}
		case "/gzip": // transparent decompression: length unknown
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			_, _ = zw.Write(b)
			_ = zw.Close()
		case "/short": // announces more than it sends, then closes
			w.Header().Set("Content-Length", strconv.Itoa(n+100))
			_, _ = w.Write(b)
			panic(http.ErrAbortHandler)
		}
	}))
	t.Cleanup(srv.Close)
	pol, err := netpolicy.New(netpolicy.Config{Allow: []string{srv.Listener.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := NewFetcher(FetcherConfig{MaxBodyBytes: limit, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	for _, path := range []string{"/length", "/chunked", "/gzip"} {
		for _, n := range []int{0, 1, 511, 512, 513, limit - 1, limit, limit + 1, 3 * limit} {
			resp, err := f.Fetch(context.Background(), &broker.Job{URL: srv.URL + path + "?n=" + strconv.Itoa(n)})
			if err != nil {
				t.Fatalf("%s n=%d: %v", path, n, err)
			}
			want, trunc := body(n), false
			if n > limit {
				want, trunc = want[:limit], true
			}
			if !bytes.Equal(resp.Body, want) || resp.Truncated != trunc {
				t.Errorf("%s n=%d: got %d bytes truncated=%v, want %d bytes truncated=%v", path, n, len(resp.Body), resp.Truncated, len(want), trunc)
			}
		}
	}
	if _, err := f.Fetch(context.Background(), &broker.Job{URL: srv.URL + "/short?n=100"}); err == nil {
		t.Error("a body shorter than its Content-Length was accepted")
	}
}

// TestReadBodyBounds checks readBody against announced lengths that are
// right, too small, too large or absent, with readers that return data with
// the error or one byte at a time: it reads the body up to limit+1 bytes,
// and its own buffer never holds more.
func TestReadBodyBounds(t *testing.T) {
	const limit = 1000
	data := []byte(strings.Repeat("x", 3*limit))
	for _, tc := range []struct {
		name     string
		n        int
		declared int64
	}{
		{"exact", 700, 700}, {"unknown", 700, -1}, {"announced too small", 700, 10},
		{"announced too large", 700, 1 << 40}, {"at the limit", limit, limit},
		{"one past the limit", limit + 1, -1}, {"far past the limit", 3 * limit, 3 * limit},
		{"empty", 0, 0}, {"empty unknown", 0, -1},
	} {
		for rname, r := range map[string]func() io.Reader{
			"plain":         func() io.Reader { return bytes.NewReader(data[:tc.n]) },
			"one byte":      func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data[:tc.n])) },
			"data with EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data[:tc.n])) },
		} {
			got, err := readBody(r(), tc.declared, limit)
			if err != nil {
				t.Fatalf("%s/%s: %v", tc.name, rname, err)
			}
			// An unknown length is io.ReadAll's, whose capacity is its own.
			if want := min(tc.n, limit+1); len(got) != want || tc.declared >= 0 && cap(got) > limit+1 {
				t.Errorf("%s/%s: read %d bytes (cap %d), want %d (cap <= %d)", tc.name, rname, len(got), cap(got), want, limit+1)
			}
		}
	}
	boom := errors.New("boom")
	got, err := readBody(io.MultiReader(bytes.NewReader(data[:10]), iotest.ErrReader(boom)), -1, limit)
	if !errors.Is(err, boom) || len(got) != 10 {
		t.Errorf("read error: got %d bytes, %v; want 10 bytes and boom", len(got), err)
	}
}

// BenchmarkReadBody compares readBody with io.ReadAll, which it replaces, on
// a 1 MiB body whose length is announced (the common case of large bodies)
// and on one whose length is not.
func BenchmarkReadBody(b *testing.B) {
	const n, limit = 1 << 20, 1 << 20
	data := bytes.Repeat([]byte("x"), n)
	for _, declared := range []int64{n, -1} {
		name := "announced"
		if declared < 0 {
			name = "unknown"
		}
		b.Run(name+"/readBody", func(b *testing.B) {
			b.SetBytes(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := readBody(bytes.NewReader(data), declared, limit); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/io.ReadAll", func(b *testing.B) {
			b.SetBytes(n)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.ReadAll(io.LimitReader(bytes.NewReader(data), limit+1)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
