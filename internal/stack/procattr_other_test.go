//go:build !linux

package stack

import "syscall"

// childAttr: no parent-death signal outside Linux; cleanups stop children.
func childAttr() *syscall.SysProcAttr { return nil }
