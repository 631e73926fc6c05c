package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Ways a Call reaches the function (PROTOCOL.md §3).
const (
	ViaDirect = "direct" // inline in the origin
	ViaNATS   = "nats"   // NATS request-reply to the runtime service
	ViaHTTP   = "http"   // HTTP to the runtime
)

// Call runs function fn with payload through the origin's caller, POST
// /call/<fn>?via=<via> on the origin's HTTP address (derived from the
// WebSocket URL, with the same token and TLS config), and returns the
// function's reply body. via is ViaDirect, ViaNATS or ViaHTTP; "" means
// ViaNATS. A reply other than 200 is a *CallError with the HTTP status
// and message; transport failures and ctx's end are returned wrapped.
// Calls do not use the WebSocket and work while it reconnects. Safe for
// concurrent use.
func (c *Client) Call(ctx context.Context, fn string, payload []byte, via string) ([]byte, error) {
	if via == "" {
		via = ViaNATS
	}
	if c.isClosed() {
		return nil, ErrClosed
	}
	u := c.httpBase + "/call/" + url.PathEscape(fn) + "?via=" + url.QueryEscape(via)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(payload))
	if err != nil {
		return nil, fmt.Errorf("client: call %s: %w", fn, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if a := c.header.Get("Authorization"); a != "" {
		req.Header.Set("Authorization", a)
	}
	resp, err := c.httpc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: call %s: %w", fn, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.maxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("client: call %s: read reply: %w", fn, err)
	}
	if int64(len(body)) > c.opts.maxResponse {
		return nil, fmt.Errorf("client: call %s: reply over %d bytes", fn, c.opts.maxResponse)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = string(bytes.TrimSpace(body))
		}
		return nil, &CallError{Status: resp.StatusCode, Message: e.Error}
	}
	return body, nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
