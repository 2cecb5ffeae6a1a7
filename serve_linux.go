//go:build linux

package wsgate

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fastListener is a listening socket served by every event loop: each
// accepts from it (the kernel wakes one of them per connection), reads the
// first request's head itself and either completes a WebSocket handshake
// on the spot or hands the connection to net/http.
type fastListener struct {
	srv       *Server
	handoff   *chanListener // where connections for net/http go
	fd        int           // our duplicate of the listener's descriptor
	loops     []*loop
	local     net.Addr // the listener's address, when bound to one IP
	timeout   int64    // handshake timeout, in nanoseconds
	maxHead   int
	maxOpen   int64
	open      atomic.Int64 // handshakes in progress
	closed    atomic.Bool
	stopped   sync.WaitGroup // one per loop still serving it
	closeOnce sync.Once
}

// pendingConn is an accepted connection whose first request's head is
// being read by its loop.
type pendingConn struct {
	fl       *fastListener
	fd       int
	remote   netip.AddrPort
	buf      []byte // what was read so far
	deadline int64
}

// listenFast starts serving ln on the event loops, or returns nil when ln
// is not a plain TCP listener (net/http then serves everything).
func (s *Server) listenFast(ln net.Listener, handoff *chanListener) (*fastListener, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil, nil
	}
	fd := -1
	var derr error
	if err := rc.Control(func(lfd uintptr) { fd, derr = unix.FcntlInt(lfd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return nil, nil
	}
	// Accepted sockets inherit TCP_NODELAY from the listener on Linux: set
	// once here, it saves a system call per connection (Nagle's algorithm
	// with delayed acknowledgements would hold small frames back).
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	// The kernel hands a connection over once its first bytes arrived
	// (TCP_DEFER_ACCEPT, for up to the handshake timeout): the loop's first
	// read then finds the request instead of EAGAIN, which saves a read and
	// a wake-up per connection, and a client that connects and sends
	// nothing takes no descriptor meanwhile.
	unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, max(1, int(s.handshakeTimeout()/time.Second)))
	loops, err := defaultEngine.reserveLoops()
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	fl := &fastListener{
		srv:     s,
		handoff: handoff,
		fd:      fd,
		loops:   loops,
		timeout: int64(s.handshakeTimeout()),
		maxHead: s.maxHeaderBytes(),
		maxOpen: int64(s.maxHandshakes()),
	}
	if a, ok := ln.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		fl.local = internLocal(a)
	}
	fl.stopped.Add(len(loops))
	for _, l := range loops {
		l.post(task{kind: taskListen, fl: fl})
	}
	return fl, nil
}

// stopFast stops the loops serving the listener and waits (a little) for
// them to let go of it.
func (s *Server) stopFast() {
	s.mu.Lock()
	fl := s.fast
	s.mu.Unlock()
	if fl == nil {
		return
	}
	fl.closeOnce.Do(func() {
		fl.closed.Store(true)
		for _, l := range fl.loops {
			l.post(task{kind: taskUnlisten, fl: fl})
		}
		done := make(chan struct{})
		go func() { fl.stopped.Wait(); close(done) }()
		select {
		case <-done:
			unix.Close(fl.fd)
		case <-time.After(time.Second):
			// A loop that stopped never got the task; the descriptor is
			// left to the process rather than closed under a loop's feet.
		}
		defaultEngine.cancel()
	})
}

// listen registers the listener with the loop.
func (l *loop) listen(fl *fastListener) {
	if fl.closed.Load() {
		fl.stopped.Done()
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(fl.fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fl.fd, &ev); err != nil {
		fl.stopped.Done()
		return
	}
	if l.listeners == nil {
		l.listeners = make(map[int]*fastListener)
	}
	l.listeners[fl.fd] = fl
}

// unlisten deregisters the listener and drops its handshakes in progress.
func (l *loop) unlisten(fl *fastListener) {
	if l.listeners[fl.fd] != fl {
		return // never registered (see listen), or already gone
	}
	delete(l.listeners, fl.fd)
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fl.fd, nil)
	for _, p := range l.handshakes {
		if p.fl == fl {
			l.forgetPending(p)
			l.dropPending(p)
		}
	}
	fl.stopped.Done()
}

// handshaking reports whether the loop has handshakes to time out.
func (l *loop) handshaking() bool { return l.nPending.Load() > 0 }

// other handles an event on a descriptor that is not a connection's: a
// listener, or a connection still in its handshake.
func (l *loop) other(fd int, events uint32, now int64) {
	if fl := l.listeners[fd]; fl != nil {
		l.accept(fl, now)
		return
	}
	if p := l.handshakes[fd]; p != nil {
		if events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			l.readHead(p, now)
		}
	}
}

// accept takes the new connections of a listener, a bounded number per
// event (the listener is level-triggered: the rest wake a loop again).
func (l *loop) accept(fl *fastListener, now int64) {
	for range 64 {
		nfd, remote, err := accept4(fl.fd)
		switch err {
		case nil:
		case unix.EINTR, unix.ECONNABORTED:
			continue
		default:
			// EAGAIN: nothing more. EMFILE and the like: the connections
			// wait in the backlog; the next event retries.
			return
		}
		if fl.closed.Load() {
			unix.Close(nfd)
			continue
		}
		if fl.open.Load() >= fl.maxOpen || (fl.srv.Admit != nil && !fl.srv.Admit()) {
			unix.Write(nfd, busyResponse)
			unix.Close(nfd)
			continue
		}
		p := &pendingConn{fl: fl, fd: nfd, remote: remote, deadline: now + fl.timeout}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(nfd)}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, nfd, &ev); err != nil {
			unix.Close(nfd)
			continue
		}
		if l.handshakes == nil {
			l.handshakes = make(map[int]*pendingConn)
		}
		l.handshakes[nfd] = p
		fl.open.Add(1)
		l.nPending.Add(1)
		l.readHead(p, now)
	}
}

var errShortWrite = errors.New("the socket took part of the response")

var busyResponse = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 38\r\n\r\ntoo many connections, try again later\n")

// readHead reads what has arrived of the first request and, once its
// head is complete, serves it.
func (l *loop) readHead(p *pendingConn, now int64) {
	for {
		if len(p.buf) == cap(p.buf) {
			if len(p.buf) >= p.fl.maxHead {
				l.refusePending(p, &handshakeError{status: http.StatusRequestHeaderFieldsTooLarge, msg: "request header fields too large"})
				return
			}
			nb := getOut(min(max(2*cap(p.buf), outSmallSize), p.fl.maxHead+1))
			nb = append(nb, p.buf...)
			putOut(p.buf)
			p.buf = nb
		}
		room := cap(p.buf) - len(p.buf)
		n, err := rawRead(p.fd, p.buf[len(p.buf):cap(p.buf)])
		if n > 0 {
			p.buf = p.buf[:len(p.buf)+n]
			if end := headEnd(p.buf); end >= 0 {
				// A short read emptied the socket: what comes next raises
				// a new edge, so the connection need not be read again now.
				l.serveHead(p, end, n == room, now)
				return
			}
			continue
		}
		switch err {
		case unix.EAGAIN:
			return
		case unix.EINTR:
			continue
		}
		l.forgetPending(p) // EOF or an error before a whole head
		l.dropPending(p)
		return
	}
}

// serveHead decides on a complete first request: a WebSocket upgrade to
// one of the Server's endpoints is done here, anything else goes to
// net/http.
func (l *loop) serveHead(p *pendingConn, end int, more bool, now int64) {
	srv := p.fl.srv
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(p.buf[:end]), end))
	if err != nil {
		l.refusePending(p, &handshakeError{status: http.StatusBadRequest, msg: "malformed HTTP request"})
		return
	}
	f := srv.Upgrades[req.URL.Path]
	if f == nil || !isUpgradeRequest(req) {
		l.handOver(p)
		return
	}
	req.RemoteAddr = p.remote.String()
	up, value, err := f(req)
	if err != nil {
		l.refusePending(p, refusal(err))
		return
	}
	hs, herr := negotiate(req, up.cfg, nil)
	if herr != nil {
		l.refusePending(p, herr)
		srv.refused(req, value, herr.cause)
		return
	}
	if n, err := writev2(p.fd, []byte(hs.response), nil); err != nil || n != len(hs.response) {
		l.forgetPending(p)
		l.dropPending(p)
		if err == nil {
			err = errShortWrite
		}
		srv.refused(req, value, fmt.Errorf("%w: writing response: %w", ErrBadHandshake, err))
		return
	}
	c := newConnState(true, up.cfg, hs.sub, hs.dp)
	c.rap = p.remote
	c.local = p.fl.local
	if c.local == nil {
		if sa, err := unix.Getsockname(p.fd); err == nil {
			c.local = internLocal(net.TCPAddrFromAddrPort(sockaddrAddrPort(sa)))
		}
	}
	if value != nil {
		c.extLocked().value = value // no other goroutine knows c yet
	}
	c.fd, c.loop = p.fd, l
	l.forgetPending(p)
	defaultEngine.reserve(false)
	defaultEngine.register(c)
	for c.fd >= len(l.conns) {
		l.conns = append(l.conns, make([]*Conn, len(l.conns)+64)...)
	}
	l.conns[c.fd] = c
	l.stats.conns.Add(1)
	c.callOnOpen()
	if rest := p.buf[end:]; len(rest) > 0 {
		// Frames sent right behind the request: the registration with the
		// loop is the handshake's, so nothing more arrives until they are
		// parsed (edge-triggered: the socket is read on after them).
		l.feed(c, rest, now)
		if c.rs.paused {
			l.pending = append(l.pending, c)
		}
	}
	putOut(p.buf)
	p.buf = nil
	if more {
		l.read(c, now, true)
	}
}

// handOver gives the connection to net/http, with what was read of it.
func (l *loop) handOver(p *pendingConn) {
	l.forgetPending(p)
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, p.fd, nil)
	f := os.NewFile(uintptr(p.fd), "")
	nc, err := net.FileConn(f) // a descriptor of its own, in Go's poller
	f.Close()
	read := append([]byte(nil), p.buf...)
	putOut(p.buf)
	p.buf = nil
	if err != nil {
		return
	}
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return
	}
	rc := &replayConn{TCPConn: tc, pending: read}
	h := p.fl.handoff
	select {
	case h.conns <- rc:
	default:
		// net/http is busy accepting: wait for it off the loop.
		go h.give(rc)
	}
}

// refusePending answers a first request with an error and closes the
// connection.
func (l *loop) refusePending(p *pendingConn, herr *handshakeError) {
	l.forgetPending(p)
	writev2(p.fd, herr.raw(), nil)
	l.dropPending(p)
}

// forgetPending removes a handshake from the loop's books.
func (l *loop) forgetPending(p *pendingConn) {
	if l.handshakes[p.fd] == p {
		delete(l.handshakes, p.fd)
		p.fl.open.Add(-1)
		l.nPending.Add(-1)
		if r := p.fl.srv.Release; r != nil {
			r()
		}
	}
}

// dropPending closes a connection that will not be served.
func (l *loop) dropPending(p *pendingConn) {
	if p.buf != nil {
		putOut(p.buf)
		p.buf = nil
	}
	rawClose(p.fd) // closing removes it from the epoll set
	p.fd = -1
}

// sweepPending closes the handshakes that went past their deadline.
func (l *loop) sweepPending(now int64) {
	for _, p := range l.handshakes {
		if now > p.deadline {
			l.forgetPending(p)
			l.dropPending(p)
		}
	}
}

// accept4 accepts a connection, non-blocking and close-on-exec. Unlike
// unix.Accept4 it asks the kernel nothing more (that one reads the socket's
// protocol for every IPv4 peer) and allocates no Sockaddr.
func accept4(lfd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	fd, _, e := syscall.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		return int(fd), netip.AddrPortFrom(netip.AddrFrom4(a.Addr), ntohs(a.Port)), nil
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		return int(fd), netip.AddrPortFrom(withZone(netip.AddrFrom16(a.Addr), a.Scope_id), ntohs(a.Port)), nil
	}
	return int(fd), netip.AddrPort{}, nil
}

// ntohs turns a port in network byte order into a number.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// sockaddrAddrPort converts a socket address.
func sockaddrAddrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(withZone(netip.AddrFrom16(a.Addr), a.ZoneId), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// withZone names the interface of a link-local IPv6 address.
func withZone(ip netip.Addr, zone uint32) netip.Addr {
	if zone == 0 {
		return ip
	}
	if ifi, err := net.InterfaceByIndex(int(zone)); err == nil {
		return ip.WithZone(ifi.Name)
	}
	return ip.WithZone(strconv.Itoa(int(zone)))
}

var _ syscall.Conn = (*replayConn)(nil)
