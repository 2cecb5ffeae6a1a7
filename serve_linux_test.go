//go:build linux

package wsgate

import (
	"net"
	"net/http"
	"testing"
	"time"

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

// The fast listener asks the kernel to hand a connection over only once
// its first bytes arrived (TCP_DEFER_ACCEPT), for about the handshake
// timeout: the loop's first read then finds the request.
func TestFastListenerDefersAccept(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{HTTP: &http.Server{ReadHeaderTimeout: 3 * time.Second}}
	fl, err := s.listenFast(ln, nil)
	if err != nil || fl == nil {
		t.Fatalf("listenFast: %v, %v", fl, err)
	}
	s.fast = fl
	defer s.stopFast()
	secs, err := unix.GetsockoptInt(fl.fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT)
	if err != nil {
		t.Fatal(err)
	}
	// The kernel rounds the time up to its SYN-ACK retransmission schedule.
	if secs < 3 {
		t.Fatalf("TCP_DEFER_ACCEPT is %d s, want at least the handshake timeout (3 s)", secs)
	}
}
