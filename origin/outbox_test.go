package origin

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestOutboxBoundsFramesAndBytes(t *testing.T) {
	o := newOutbox(3, 10)
	if !o.push([]byte("aaaa")) || !o.push([]byte("bbbb")) {
		t.Fatal("push within bounds refused")
	}
	if o.push([]byte("ccc")) {
		t.Fatal("push past the byte bound (11 > 10) accepted")
	}
	if !o.push([]byte("cc")) {
		t.Fatal("push to exactly the byte bound refused")
	}
	if o.push(nil) {
		t.Fatal("push past the frame bound accepted")
	}
	if f, b := o.size(); f != 3 || b != 10 {
		t.Fatalf("size = %d frames %d bytes, want 3 and 10", f, b)
	}
	// One frame larger than the byte bound still goes through an empty queue.
	big := newOutbox(3, 10)
	if !big.push(bytes.Repeat([]byte("x"), 100)) {
		t.Fatal("a single oversized frame into an empty queue was refused")
	}
}

func TestOutboxTakesInOrderInBatchesAndReleasesMemory(t *testing.T) {
	o := newOutbox(100, 1<<20)
	for _, f := range []string{"1", "22", "333", "4444"} {
		o.push([]byte(f))
	}
	drained := o.drainedChan()
	got := o.take(nil, 3) // "1","22" fit in 3 bytes; "333" would not
	if len(got) != 2 || string(got[0]) != "1" || string(got[1]) != "22" {
		t.Fatalf("first batch %q, want [1 22]", got)
	}
	select {
	case <-drained:
	default:
		t.Fatal("no drained token after a take")
	}
	got = o.take(got[:0], 1) // at least one frame, even past maxBytes
	if len(got) != 1 || string(got[0]) != "333" {
		t.Fatalf("second batch %q, want [333]", got)
	}
	got = o.take(got[:0], 1<<20)
	if len(got) != 1 || string(got[0]) != "4444" {
		t.Fatalf("third batch %q, want [4444]", got)
	}
	if o.frames != nil || o.head != 0 || o.bytes != 0 {
		t.Fatalf("empty queue still holds %d slots (head %d, %d bytes)", cap(o.frames), o.head, o.bytes)
	}
	if got = o.take(got[:0], 1<<20); len(got) != 0 {
		t.Fatalf("take from an empty queue gave %q", got)
	}
}

// TestSessionClientStateIsTheContinuationsJSON: the default continuation's
// state, built by hand, decodes as clientState (resultToClient reads it).
func TestSessionClientStateIsTheContinuationsJSON(t *testing.T) {
	c := &session{id: "SU0cz0rX5hsSc70IfS7SNl"}
	var st clientState
	if err := json.Unmarshal(c.clientState(), &st); err != nil || st.Session != c.id {
		t.Fatalf("state %s: %+v, %v; want session %s", c.clientState(), st, err, c.id)
	}
}
