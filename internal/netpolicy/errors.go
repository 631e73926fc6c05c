package netpolicy

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidURL reports a URL or dial address the policy cannot interpret safely: a nil or
	// opaque URL, a scheme other than http or https, a missing or malformed host, a port that
	// is not a number in 1..65535, userinfo ("user:pass@"), or a numeric host that is not an
	// IPv4 address in canonical dotted-decimal form. It is always returned wrapped with
	// detail; test for it with errors.Is. The fetcher maps it to the invalid_url wire code.
	ErrInvalidURL = errors.New("netpolicy: invalid URL")

	// ErrTooManyRedirects is returned, wrapped, by CheckRedirect when following one more
	// redirect would exceed Config.MaxRedirects. It is not a *DestinationError: the
	// destination was not refused, the chain was too long. The fetcher maps it to
	// fetch_failed.
	ErrTooManyRedirects = errors.New("netpolicy: too many redirects")

	// ErrInvalidConfig is returned, wrapped with the offending field and value, by New when a
	// Config entry or option is malformed.
	ErrInvalidConfig = errors.New("netpolicy: invalid config")
)

// DestinationError reports a destination refused by the policy: a denied address (literal
// or resolved), a denied host name, a non-permitted port, or a Deny entry. Every refusal
// made by CheckURL, ParseURL, CheckRedirect and DialContext because of where a request would
// go is a *DestinationError, possibly wrapped; read it with errors.As. The fetcher maps it to
// the blocked_destination wire code.
type DestinationError struct {
	// Host is the host as it appeared in the URL or dial address, without port or brackets.
	Host string
	// Reason says why the destination was refused, naming the address that was actually
	// judged when it differs from Host, e.g. "resolves to 10.0.0.1: private address
	// (RFC 1918)" or "non-canonical IPv4 literal for 127.0.0.1: loopback address".
	Reason string
}

// Error returns a one-line description: `netpolicy: blocked destination "host": reason`.
func (e *DestinationError) Error() string {
	return fmt.Sprintf("netpolicy: blocked destination %q: %s", e.Host, e.Reason)
}

// invalidf returns an error wrapping ErrInvalidURL with a formatted detail.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidURL, fmt.Sprintf(format, args...))
}
