package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// StartFetch is a start-fetch frame (PROTOCOL.md §1, §1.1). Optional
// members are left out when zero.
type StartFetch struct {
	ID      string            `json:"id"`
	URL     string            `json:"url"`
	Method  string            `json:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    string            `json:"body,omitempty"`
	// BodyEncoding is utf8 (default) or base64 for bodies that are not
	// valid UTF-8.
	BodyEncoding string `json:"body_encoding,omitempty"`
	TimeoutMS    int64  `json:"timeout_ms,omitempty"`
	Key          string `json:"key,omitempty"`
	DelayMS      int64  `json:"delay_ms,omitempty"`
}

// StartFetchPrefix is how every encoded start-fetch frame begins, up to the
// id's value.
const StartFetchPrefix = `{"type":"start-fetch","id":"`

// Encode returns the frame as JSON. It fails only for a value JSON cannot
// hold (never for the field types here).
func (f *StartFetch) Encode() ([]byte, error) {
	return encode(TypeStartFetch, f)
}

// Suffix returns the encoding of f after its id: StartFetchPrefix + id +
// Suffix is the whole frame, for any id that needs no JSON escaping (see
// ValidID and AppendID). Senders that vary only the id, like the load
// generator, encode the rest once. f.ID is ignored.
func (f *StartFetch) Suffix() ([]byte, error) {
	g := *f
	g.ID = ""
	b, err := g.Encode()
	if err != nil {
		return nil, err
	}
	rest, ok := bytes.CutPrefix(b, []byte(StartFetchPrefix))
	if !ok {
		return nil, fmt.Errorf("wire: start-fetch encodes as %.40q", b)
	}
	return rest, nil
}

// GetResult is a get-result frame: by Job, or by Key (§1.1); exactly one
// of the two should be set.
type GetResult struct {
	ID  string `json:"id"`
	Job string `json:"job,omitempty"`
	Key string `json:"key,omitempty"`
}

// Encode returns the frame as JSON.
func (f *GetResult) Encode() ([]byte, error) { return encode(TypeGetResult, f) }

// Cancel is a cancel frame (§1.1): by Job, or by Key.
type Cancel struct {
	ID  string `json:"id"`
	Job string `json:"job,omitempty"`
	Key string `json:"key,omitempty"`
}

// Encode returns the frame as JSON.
func (f *Cancel) Encode() ([]byte, error) { return encode(TypeCancel, f) }

// encode writes {"type":typ, ...v's members}.
func encode(typ string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("wire: encode %s: %w", typ, err)
	}
	out := make([]byte, 0, len(b)+len(typ)+10)
	out = append(out, `{"type":"`...)
	out = append(out, typ...)
	out = append(out, `",`...)
	return append(out, b[1:]...), nil
}
