//go:build linux

package loadtest

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// bindAddressNoPort sets IP_BIND_ADDRESS_NO_PORT, so that binding a source
// address does not reserve a port until connect picks one that is free for
// the whole 4-tuple: ports in TIME_WAIT towards one server do not block
// connections from the same address to another.
func bindAddressNoPort(network, address string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
