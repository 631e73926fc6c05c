//go:build !linux

package faults

import "syscall"

// childAttr: no parent-death signal outside Linux; cleanups stop children.
func childAttr() *syscall.SysProcAttr { return nil }
