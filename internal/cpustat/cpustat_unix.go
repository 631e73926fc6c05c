//go:build unix

// Package cpustat reads CPU time used by processes: this one (getrusage)
// and others by pid (Linux /proc). Its functions are safe for concurrent
// use.
package cpustat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// Process is the user+system CPU time this process has used, and whether
// it could be read (not on every platform).
func Process() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// PIDs is the user+system CPU time the processes pids have used, from
// /proc/<pid>/stat (fields 14 and 15, after the parenthesized command). It
// fails when a process is gone or /proc cannot be read (not Linux).
func PIDs(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
		}
		// The command may hold spaces and parentheses: fields start after
		// the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0, fmt.Errorf("cpu of pid %d: unexpected /proc stat", pid)
		}
		f := bytes.Fields(b[i+1:])
		if len(f) < 13 {
			return 0, fmt.Errorf("cpu of pid %d: unexpected /proc stat", pid)
		}
		// f[0] is field 3 (state): utime is field 14, stime 15.
		for _, s := range f[11:13] {
			v, err := strconv.ParseInt(string(s), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
			}
			total += time.Duration(v) * time.Second / clockTicks
		}
	}
	return total, nil
}
