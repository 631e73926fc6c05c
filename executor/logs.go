package executor

import (
	"errors"
	"fmt"
	"net/url"
)

// logSafe returns err fit for a log line: a *url.Error (which net/http
// returns, quoting the whole request URL) is replaced by its operation and
// cause with the URL left out, since a query string may carry a token.
// Other errors are returned unchanged.
func logSafe(err error) error {
	var ue *url.Error
	if err == nil || !errors.As(err, &ue) {
		return err
	}
	return fmt.Errorf("%s request: %w", ue.Op, ue.Err)
}
