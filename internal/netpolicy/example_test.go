package netpolicy_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pipeline-dev/pipeline/internal/netpolicy"
)

func ExamplePolicy_CheckURL() {
	p, err := netpolicy.New(netpolicy.Config{Allow: []string{"127.0.0.1:8090"}})
	if err != nil {
		panic(err)
	}
	for _, raw := range []string{
		"http://127.0.0.1:8090/echo",
		"http://127.0.0.1:8091/",
		"http://0x7f.1/",
		"http://169.254.169.254/latest/meta-data",
		"file:///etc/passwd",
	} {
		_, err := p.ParseURL(raw)
		var de *netpolicy.DestinationError
		switch {
		case err == nil:
			fmt.Println(raw, "=> allowed")
		case errors.As(err, &de):
			fmt.Println(raw, "=> blocked:", de.Reason)
		case errors.Is(err, netpolicy.ErrInvalidURL):
			fmt.Println(raw, "=> invalid")
		}
	}
	// Output:
	// http://127.0.0.1:8090/echo => allowed
	// http://127.0.0.1:8091/ => blocked: loopback address
	// http://0x7f.1/ => blocked: non-canonical IPv4 literal for 127.0.0.1: loopback address
	// http://169.254.169.254/latest/meta-data => blocked: cloud metadata address (link-local)
	// file:///etc/passwd => invalid
}

func ExamplePolicy_Transport() {
	p, err := netpolicy.New(netpolicy.Config{})
	if err != nil {
		panic(err)
	}
	// Every connection and every redirect of this client goes through the policy.
	client := &http.Client{
		Transport:     p.Transport(nil),
		CheckRedirect: p.CheckRedirect,
		Timeout:       10 * time.Second,
	}
	_ = client
}
