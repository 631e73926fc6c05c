package origin

import (
	"strconv"
	"testing"
)

func TestCanceledSetIsBounded(t *testing.T) {
	var c cancels
	for i := 0; i < maxCanceled+10; i++ {
		c.add("j" + strconv.Itoa(i))
	}
	c.add("j5") // forgotten already: added again, as the newest
	if len(c.ids) != maxCanceled || len(c.order) != maxCanceled {
		t.Fatalf("%d ids, %d in order; want %d", len(c.ids), len(c.order), maxCanceled)
	}
	if c.has("j0") || !c.has("j5") || !c.has("j"+strconv.Itoa(maxCanceled+9)) {
		t.Fatal("the oldest should go first")
	}
}
