//go:build unix

package wsgate_test

import (
	"cmp"
	"syscall"
)

// smallReceiveBuffer is a net.Dialer Control function that caps the
// socket's receive buffer before it connects, so a writer to a client that
// does not read stalls after little data, whatever the system's buffer
// autotuning would allow (loopback takes tens of MiB by default).
func smallReceiveBuffer(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10)
	})
	return cmp.Or(err, serr)
}
