package httpserve

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
)

// maxPooledBody is the largest buffer a BodyPool keeps.
const maxPooledBody = 256 << 10

// BodyPool recycles request body buffers of up to 256 KiB, for handlers
// that read a whole body per request (the runtime's /rpc/<fn> and the
// origin's /call/<fn>). The zero value is ready to use; it is safe for
// concurrent use.
type BodyPool struct{ p sync.Pool }

// Body is a request body read into a pooled buffer.
type Body struct {
	// B holds the body's bytes.
	B    []byte
	pool *BodyPool
}

// TooLargeError is returned by BodyPool.Read for a body over the limit.
type TooLargeError struct {
	// Size is the body's declared length, or 0 when it was not declared.
	Size int
	// Max is the limit.
	Max int
}

func (e *TooLargeError) Error() string {
	if e.Size > 0 {
		return fmt.Sprintf("payload of %d bytes is over the %d-byte limit", e.Size, e.Max)
	}
	return fmt.Sprintf("payload is over the %d-byte limit", e.Max)
}

func (p *BodyPool) get() *Body {
	if b, ok := p.p.Get().(*Body); ok {
		return b
	}
	return &Body{B: make([]byte, 0, 4096), pool: p}
}

// Release returns the buffer to its pool; its bytes must not be used after.
func (b *Body) Release() {
	if cap(b.B) <= maxPooledBody {
		b.B = b.B[:0]
		b.pool.p.Put(b)
	}
}

// Read reads r's body, at most max bytes, into a pooled buffer. A body over
// max fails with a *TooLargeError (the connection is then told to close);
// a failed read with the reader's error. The caller releases the buffer
// once nothing refers to its bytes any longer.
func (p *BodyPool) Read(w http.ResponseWriter, r *http.Request, max int) (*Body, error) {
	if r.ContentLength > int64(max) {
		return nil, &TooLargeError{Size: int(r.ContentLength), Max: max}
	}
	buf := p.get()
	if r.ContentLength > 0 && int(r.ContentLength) > cap(buf.B) {
		buf.B = make([]byte, 0, r.ContentLength)
	}
	rd := http.MaxBytesReader(w, r.Body, int64(max))
	for {
		if len(buf.B) == cap(buf.B) {
			buf.B = append(buf.B, 0)[:len(buf.B)]
		}
		n, err := rd.Read(buf.B[len(buf.B):cap(buf.B)])
		buf.B = buf.B[:len(buf.B)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			buf.Release()
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return nil, &TooLargeError{Max: max}
			}
			return nil, fmt.Errorf("cannot read request body: %w", err)
		}
	}
}
