//go:build !unix

package wsgate_test

import "syscall"

// smallReceiveBuffer leaves the buffer as it is where there are no Unix
// socket options.
func smallReceiveBuffer(_, _ string, _ syscall.RawConn) error { return nil }
