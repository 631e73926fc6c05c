package rpc

import "net/http"

// statusOf is the HTTP-style status a call ended with, for the metrics: 0
// for success, else the *Error code (500 for an untyped error).
func statusOf(err error) int {
	if err == nil {
		return 0
	}
	return AsError(err).Code
}

// serverHandler is the HTTPServer's handler: the runtime functions under
// /rpc/ (and their JSON 404 for any other path), plus cfg.Handlers.
func serverHandler(cfg HTTPConfig) http.Handler {
	h := &rpcHandler{limits: cfg.Limits.withDefaults(), m: cfg.Metrics.RPC()}
	if len(cfg.Handlers) == 0 {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	for pattern, extra := range cfg.Handlers {
		mux.Handle(pattern, extra)
	}
	return mux
}
