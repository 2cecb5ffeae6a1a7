//go:build !linux

package loadtest

import "syscall"

// bindAddressNoPort does nothing off Linux.
func bindAddressNoPort(network, address string, rc syscall.RawConn) error { return nil }
