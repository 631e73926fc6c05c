// Package client is the Go client of the pipeline's origin: it dials the
// origin's WebSocket (PROTOCOL.md §1), starts outbound fetches and waits for
// their results, cancels them, and calls the origin's functions over HTTP
// (/call, §3).
//
// A Client holds one WebSocket connection. When the connection drops it
// reconnects with exponential backoff and re-attaches every fetch it has not
// seen finish: a fetch the origin confirmed (`enqueued`) is asked for by its
// key (`get-result`, §1.1), a fetch it sent but saw no confirmation for is
// sent again under the same key, which the origin de-duplicates. So each
// Fetch returns exactly one result across any number of drops, and with an
// origin that honours keys no fetch runs twice. Every fetch carries a key:
// the caller's, or a random one.
//
// A Client is safe for concurrent use by multiple goroutines. It does not
// log. Errors the origin reports are *Error values carrying the wire code;
// read them with errors.As.
package client
