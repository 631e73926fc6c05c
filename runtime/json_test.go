package runtime

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestSWARHelpers checks the 8-bytes-at-a-time helpers against a byte-wise
// computation for every byte value in every position.
func TestSWARHelpers(t *testing.T) {
	for pos := range 8 {
		for v := range 256 {
			var chunk [8]byte
			copy(chunk[:], "mAz09 _~")
			chunk[pos] = byte(v)
			x := binary.LittleEndian.Uint64(chunk[:])

			wantEsc := false
			for _, c := range chunk {
				if c < 0x20 || c == '"' || c == '\\' {
					wantEsc = true
				}
			}
			if got := needsEscape(x); got != wantEsc {
				t.Fatalf("needsEscape(%q): got %v, want %v", chunk, got, wantEsc)
			}
			if v >= 0x80 {
				continue // upperASCII is only used on ASCII chunks
			}
			var got [8]byte
			binary.LittleEndian.PutUint64(got[:], upperASCII(x))
			if want := bytes.ToUpper(chunk[:]); !bytes.Equal(got[:], want) {
				t.Fatalf("upperASCII(%q): got %q, want %q", chunk, got, want)
			}
		}
	}
	if n := plainRun([]byte(`0123456789abcdef"rest`)); n != 16 {
		t.Fatalf("plainRun: got %d, want 16", n)
	}
}
