//go:build !unix

package loadgen

import (
	"errors"
	"time"
)

// processCPU cannot be read on this platform.
func processCPU() (time.Duration, bool) { return 0, false }

// pidsCPU cannot read other processes' CPU on this platform.
func pidsCPU(pids []int) (time.Duration, error) {
	if len(pids) == 0 {
		return 0, nil
	}
	return 0, errors.New("reading another process's CPU time needs Linux /proc")
}
