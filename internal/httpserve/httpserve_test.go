package httpserve

import (
	"context"
	"errors"
	"io"
	"net/http"
	"testing"

	"github.com/rs/zerolog"
)

func TestLifecycle(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })}
	s := New("test server", "127.0.0.1:0", srv, zerolog.Nop())
	if s.Addr() != "" || s.URL() != "" {
		t.Fatal("address before Start")
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v, want ErrStarted", err)
	}
	resp, err := http.Get(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Fatalf("body %q", body)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(s.URL()); err == nil {
		t.Fatal("still serving after Shutdown")
	}
	busy := New("second", s.Addr(), &http.Server{}, zerolog.Nop())
	other := New("first", "127.0.0.1:0", &http.Server{}, zerolog.Nop())
	if err := other.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer other.Shutdown(context.Background())
	busy.addr = other.Addr()
	if err := busy.Start(context.Background()); err == nil {
		t.Fatal("listening on a taken port succeeded")
	}
}
