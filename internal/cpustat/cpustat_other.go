//go:build !unix

package cpustat

import (
	"errors"
	"time"
)

// Process cannot be read on this platform.
func Process() (time.Duration, bool) { return 0, false }

// PIDs cannot read other processes' CPU on this platform.
func PIDs(pids []int) (time.Duration, error) {
	if len(pids) == 0 {
		return 0, nil
	}
	return 0, errors.New("reading another process's CPU time needs Linux /proc")
}
