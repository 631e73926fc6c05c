package stack

import "syscall"

// childAttr makes a pipeline process started by a test die with the test
// binary, also when a test timeout panics before its cleanups run.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
