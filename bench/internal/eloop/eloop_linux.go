//go:build linux

// Package eloop is a deliberately tiny TCP server on a single epoll loop,
// shared by the reference baselines (epollref, tcpecho). One goroutine does
// everything: accept, read, run the handler, write. Idle connections hold
// no buffers, only a small Conn struct, so the baselines show the floor of
// memory per connection and the ceiling of messages per core.
package eloop

import (
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// Handler consumes input for one connection. It returns how many bytes of
// in it used; the rest is kept and offered again, prefixed to the next
// read. It may call c.Send and c.Close. in is only valid during the call.
type Handler func(c *Conn, in []byte) int

// Conn is one accepted connection. Only the loop goroutine touches it.
type Conn struct {
	fd      int
	pending []byte // unconsumed input; nil when there is none
	out     []byte // output the socket did not take yet; nil when none
	closing bool   // close once out is written
	// State is free for the handler (epollref: 0 before the upgrade).
	State uint8
}

// Server is a single-threaded epoll server.
type Server struct {
	lfd     int
	epfd    int
	handler Handler
	conns   []*Conn // indexed by fd
	buf     []byte
	events  []unix.EpollEvent
	// MaxPending bounds unconsumed input per connection; a connection
	// that exceeds it is closed. Defaults to 16 MiB.
	MaxPending int
}

// Listen binds addr ("host:port", IPv4) and returns a server that will run
// h for each read.
func Listen(addr string, h Handler) (*Server, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("eloop: address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("eloop: port %q: %w", portStr, err)
	}
	var sa unix.SockaddrInet4
	sa.Port = port
	if host != "" {
		ip := net.ParseIP(host).To4()
		if ip == nil {
			return nil, fmt.Errorf("eloop: %q is not an IPv4 address", host)
		}
		copy(sa.Addr[:], ip)
	}
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("eloop: socket: %w", err)
	}
	if err := unix.SetsockoptInt(lfd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(lfd)
		return nil, fmt.Errorf("eloop: SO_REUSEADDR: %w", err)
	}
	if err := unix.Bind(lfd, &sa); err != nil {
		unix.Close(lfd)
		return nil, fmt.Errorf("eloop: bind %s: %w", addr, err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		unix.Close(lfd)
		return nil, fmt.Errorf("eloop: listen: %w", err)
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		unix.Close(lfd)
		return nil, fmt.Errorf("eloop: epoll_create: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, lfd, &ev); err != nil {
		unix.Close(lfd)
		unix.Close(epfd)
		return nil, fmt.Errorf("eloop: epoll_ctl: %w", err)
	}
	return &Server{
		lfd:        lfd,
		epfd:       epfd,
		handler:    h,
		buf:        make([]byte, 64<<10),
		events:     make([]unix.EpollEvent, 512),
		MaxPending: 16 << 20,
	}, nil
}

// Run serves forever on the calling goroutine; it returns only when
// epoll_wait fails.
func (s *Server) Run() error {
	for {
		n, err := unix.EpollWait(s.epfd, s.events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("eloop: epoll_wait: %w", err)
		}
		for i := 0; i < n; i++ {
			ev := s.events[i]
			fd := int(ev.Fd)
			if fd == s.lfd {
				s.accept()
				continue
			}
			if fd >= len(s.conns) || s.conns[fd] == nil {
				continue
			}
			c := s.conns[fd]
			if ev.Events&unix.EPOLLOUT != 0 {
				s.flush(c)
				if s.conns[fd] != c {
					continue
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 && c.out == nil {
				s.read(c)
			}
		}
	}
}

func (s *Server) accept() {
	for range 256 {
		fd, _, err := unix.Accept4(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			// EAGAIN: drained. EMFILE and the like: try again on the next
			// event rather than spin here.
			return
		}
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(fd)}
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			unix.Close(fd)
			continue
		}
		for fd >= len(s.conns) {
			s.conns = append(s.conns, make([]*Conn, len(s.conns)+1024)...)
		}
		s.conns[fd] = &Conn{fd: fd}
	}
}

// read does one read (level-triggered: more input raises another event)
// and hands the bytes to the handler.
func (s *Server) read(c *Conn) {
	n, err := unix.Read(c.fd, s.buf)
	if n <= 0 {
		if err == unix.EAGAIN || err == unix.EINTR {
			return
		}
		s.drop(c)
		return
	}
	in := s.buf[:n]
	if c.pending != nil {
		c.pending = append(c.pending, in...)
		in = c.pending
	}
	used := s.handler(c, in)
	if s.conns[c.fd] != c {
		return // the handler closed it
	}
	switch rest := in[used:]; {
	case len(rest) == 0:
		c.pending = nil
	case len(rest) > s.MaxPending:
		s.drop(c)
		return
	case c.pending != nil:
		c.pending = c.pending[:copy(c.pending, rest)]
	default:
		c.pending = append([]byte(nil), rest...)
	}
	switch {
	case c.out != nil:
		ev := unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(c.fd)}
		unix.EpollCtl(s.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
	case c.closing:
		s.drop(c)
	}
}

// Send writes p at once when nothing is queued; what the socket does not
// take is kept and written when it drains. While output is pending the
// loop stops reading the connection, so a peer that does not read cannot
// make the server buffer without bound.
func (c *Conn) Send(p []byte) {
	if c.out != nil {
		c.out = append(c.out, p...)
		return
	}
	for len(p) > 0 {
		n, err := unix.Write(c.fd, p)
		if n > 0 {
			p = p[n:]
			continue
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.EAGAIN {
			c.closing = true // broken: nothing more will go out
			return
		}
		c.out = append([]byte(nil), p...)
		return
	}
}

// Close closes the connection once what was sent has gone out.
func (c *Conn) Close() { c.closing = true }

// flush writes pending output and watches for writability until it is
// all out.
func (s *Server) flush(c *Conn) {
	for len(c.out) > 0 {
		n, err := unix.Write(c.fd, c.out)
		if n > 0 {
			c.out = c.out[n:]
			continue
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.EAGAIN {
			s.drop(c)
			return
		}
		break
	}
	if len(c.out) == 0 {
		c.out = nil
		if c.closing {
			s.drop(c)
			return
		}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}
		unix.EpollCtl(s.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
		return
	}
	ev := unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(c.fd)}
	unix.EpollCtl(s.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev)
}

func (s *Server) drop(c *Conn) {
	if s.conns[c.fd] != c {
		return
	}
	s.conns[c.fd] = nil
	unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd)
	c.pending, c.out = nil, nil
}
