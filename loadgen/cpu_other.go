//go:build !unix

package loadgen

import "time"

// processCPU cannot be read on this platform.
func processCPU() (time.Duration, bool) { return 0, false }
