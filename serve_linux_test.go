//go:build linux

package wsgate

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// listenFast sets TCP_NODELAY once on the listener and counts on accepted
// sockets inheriting it, as Linux does: check that it does.
func TestAcceptedSocketsInheritNoDelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	var lfd int
	rc.Control(func(fd uintptr) { lfd = int(fd) })
	if err := unix.SetsockoptInt(lfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		t.Fatal(err)
	}
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var nfd int
	for {
		var err error
		rc.Control(func(fd uintptr) { nfd, _, err = unix.Accept4(int(fd), unix.SOCK_CLOEXEC) })
		if err != unix.EAGAIN {
			if err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	defer unix.Close(nfd)
	v, err := unix.GetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
	if err != nil || v == 0 {
		t.Fatalf("TCP_NODELAY on the accepted socket: %d %v, want it inherited", v, err)
	}
}
