package loadgen

import "testing"

func TestRequestID(t *testing.T) {
	b := appendRequestID(nil, 3, 41, 1234567)
	if string(b) != "c3.41.1234567" {
		t.Fatalf("got %q", b)
	}
	id, err := parseRequestID(b)
	if err != nil || id != (requestID{3, 41, 1234567}) {
		t.Fatalf("parse: %+v %v", id, err)
	}
	for _, bad := range []string{"", "c1.2", "c1..2.3", "x1.2.3", "c1.2.3.4", "c1.2.", "c.1.2", "c1.2.99999999999999999999"} {
		if _, err := parseRequestID([]byte(bad)); err == nil {
			t.Errorf("parseRequestID(%q) succeeded", bad)
		}
	}
}
