//go:build linux

package wsgate

import (
	"net"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// loop is an epoll event loop. It owns the file descriptors of its
// connections: only it reads them and only it closes them, so a descriptor
// number is never reused while another goroutine could still use it.
// Writers write to a descriptor under the connection's mutex after checking
// that the connection is not closed.
type loop struct {
	epfd int
	evfd int
	// epf is epfd registered with the Go runtime's poller: the loop parks
	// there like any goroutine waiting for the network, instead of holding
	// an OS thread and its P in a blocking epoll_wait.
	epf    *os.File
	erc    syscall.RawConn
	pollFn func(uintptr) bool
	events []unix.EpollEvent
	nready int
	block  bool

	mu      sync.Mutex
	tasks   []task
	waking  bool
	stopped bool   // the descriptors are closed: post must not touch them
	running []task // the loop's own copy of tasks being run

	conns   []*Conn // indexed by fd; loop goroutine only
	buf     []byte
	pending []*Conn // connections with more input to read
}

const (
	readBufSize   = 64 << 10
	readsPerEvent = 8
)

// startLoops starts one loop per usable CPU.
func startLoops() []*loop {
	n := runtime.GOMAXPROCS(0)
	loops := make([]*loop, 0, n)
	for range n {
		l, err := newLoop()
		if err != nil {
			panic("wsgate: cannot start event loop: " + err.Error())
		}
		loops = append(loops, l)
		go l.run()
	}
	return loops
}

func newLoop() (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	epf := os.NewFile(uintptr(epfd), "epoll")
	erc, err := epf.SyscallConn()
	if err != nil {
		epf.Close()
		unix.Close(evfd)
		return nil, err
	}
	l := &loop{epfd: epfd, evfd: evfd, epf: epf, erc: erc, buf: make([]byte, readBufSize), events: make([]unix.EpollEvent, 256)}
	l.pollFn = l.poll
	return l, nil
}

// wait returns ready events. It polls without blocking and, when nothing
// is ready and no input is pending, parks in the runtime's poller until
// the epoll descriptor becomes readable.
func (l *loop) wait() int {
	l.block = len(l.pending) == 0
	if err := l.erc.Read(l.pollFn); err != nil {
		panic("wsgate: epoll wait: " + err.Error())
	}
	return l.nready
}

// poll is the callback of wait; it is stored in pollFn once so that
// waiting allocates nothing.
func (l *loop) poll(uintptr) bool {
	for {
		n, err := unix.EpollWait(l.epfd, l.events, 0)
		if err == unix.EINTR {
			continue
		}
		l.nready = max(n, 0)
		return n > 0 || !l.block
	}
}

// post queues a task for the loop goroutine and wakes it.
func (l *loop) post(t task) {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return
	}
	l.tasks = append(l.tasks, t)
	wake := !l.waking
	l.waking = true
	l.mu.Unlock()
	if wake {
		var one = [8]byte{1}
		unix.Write(l.evfd, one[:])
	}
}

func (l *loop) run() {
	events := l.events
	for {
		n := l.wait()
		now := nanotime()
		for i := 0; i < n; i++ {
			ev := &events[i]
			fd := int(ev.Fd)
			if fd == l.evfd {
				if l.runTasks(now) {
					return
				}
				continue
			}
			if fd >= len(l.conns) || l.conns[fd] == nil {
				continue
			}
			c := l.conns[fd]
			if ev.Events&unix.EPOLLOUT != 0 {
				c.mu.Lock()
				c.flushLocked(false)
				c.mu.Unlock()
			}
			if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				l.read(c, now, true)
			} else if ev.Events&unix.EPOLLIN != 0 {
				l.read(c, now, false)
			}
		}
		if len(l.pending) > 0 {
			p := l.pending
			l.pending = nil
			for i, c := range p {
				p[i] = nil
				if c.fd >= 0 && c.fd < len(l.conns) && l.conns[c.fd] == c {
					l.read(c, now, true)
				}
			}
		}
	}
}

// runTasks runs the posted tasks and reports whether the loop must exit.
func (l *loop) runTasks(now int64) bool {
	var b [8]byte
	unix.Read(l.evfd, b[:])
	l.mu.Lock()
	l.running, l.tasks = l.tasks, l.running[:0]
	l.waking = false
	l.mu.Unlock()
	stop := false
	for i := range l.running {
		t := l.running[i]
		l.running[i] = task{}
		switch t.kind {
		case taskAdd:
			l.add(t.c, t.data, now)
		case taskClose:
			l.close(t.c)
		case taskResume:
			l.resume(t.c, now)
		case taskStop:
			stop = true
		}
	}
	if stop {
		l.mu.Lock()
		l.stopped = true
		l.mu.Unlock()
		l.epf.Close()
		unix.Close(l.evfd)
	}
	return stop
}

func (l *loop) add(c *Conn, leftover []byte, now int64) {
	fd := c.fd
	for fd >= len(l.conns) {
		l.conns = append(l.conns, make([]*Conn, len(l.conns)+64)...)
	}
	l.conns[fd] = c
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.mu.Lock()
		c.abortLocked(err)
		c.mu.Unlock()
		return
	}
	if len(leftover) > 0 {
		l.feed(c, leftover, now)
	}
}

func (l *loop) close(c *Conn) {
	fd := c.fd
	if fd < 0 || fd >= len(l.conns) || l.conns[fd] != c {
		return
	}
	l.conns[fd] = nil
	// No EPOLL_CTL_DEL: ours is the only descriptor of the socket, and
	// closing it removes it from the epoll set.
	c.mu.Lock()
	unix.Close(fd)
	c.mu.Unlock()
	c.finish()
}

func (l *loop) resume(c *Conn, now int64) {
	if c.fd < 0 || c.fd >= len(l.conns) || l.conns[c.fd] != c || !c.rs.paused {
		return
	}
	if c.rq.isPaused() {
		return
	}
	c.rs.paused = false
	if len(c.rs.stash) > 0 {
		stash := c.rs.stash
		l.feed(c, stash, now)
		if c.rs.paused {
			return
		}
	}
	l.read(c, now, true)
}

// feed parses input with writes corked, so that every reply produced while
// handling one read goes out in one system call.
func (l *loop) feed(c *Conn, p []byte, now int64) {
	c.lastRecv.Store(now)
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
	c.feed(p, now)
	c.mu.Lock()
	c.corked = false
	c.flushLocked(false)
	c.mu.Unlock()
}

// read drains the socket (edge-triggered), a bounded number of reads at a
// time so that one busy peer cannot starve the others. A short read means
// the socket is empty unless the peer's FIN may already be waiting behind
// the data (drain): then it reads on until EAGAIN or EOF.
func (l *loop) read(c *Conn, now int64, drain bool) {
	fd := c.fd
	for i := 0; i < readsPerEvent; i++ {
		if c.rs.paused {
			return
		}
		n, err := rawRead(fd, l.buf)
		if n > 0 {
			l.feed(c, l.buf[:n], now)
			if n < len(l.buf) && !drain {
				return
			}
			continue
		}
		switch err {
		case nil:
			c.onEOF()
			return
		case unix.EAGAIN:
			return
		case unix.EINTR:
			i--
			continue
		default:
			c.mu.Lock()
			c.abortLocked(err)
			c.mu.Unlock()
			return
		}
	}
	l.pending = append(l.pending, c)
}

// takeFD moves a TCP or Unix socket out of the Go runtime's poller into a
// descriptor of our own, in non-blocking mode. nc is closed on success.
// It costs three system calls (dup, the runtime's epoll_ctl and close of
// the original) plus our loop's epoll_ctl.
func takeFD(nc net.Conn) (int, bool) {
	var raw interface {
		SyscallConn() (syscall.RawConn, error)
	}
	switch t := nc.(type) {
	case *net.TCPConn:
		raw = t
	case *net.UnixConn:
		raw = t
	default:
		return -1, false
	}
	rc, err := raw.SyscallConn()
	if err != nil {
		return -1, false
	}
	nfd := -1
	var derr error
	err = rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil || derr != nil {
		return -1, false
	}
	// No fcntl for O_NONBLOCK: the duplicate shares the open file
	// description, which the Go runtime already made non-blocking.
	nc.Close()
	return nfd, true
}

// shutdownWrite sends FIN after what was written.
func shutdownWrite(fd int) { unix.Shutdown(fd, unix.SHUT_WR) }

// writev2 writes a and b to a non-blocking descriptor and returns how many
// bytes went out; a full socket buffer is not an error.
func writev2(fd int, a, b []byte) (int, error) {
	iov := [][]byte{a, b}
	if len(b) == 0 {
		iov = iov[:1]
	}
	total := 0
	for {
		n, err := rawWritev(fd, iov)
		if n > 0 {
			total += n
			for n > 0 && len(iov) > 0 {
				if n >= len(iov[0]) {
					n -= len(iov[0])
					iov = iov[1:]
				} else {
					iov[0] = iov[0][n:]
					n = 0
				}
			}
			if len(iov) == 0 {
				return total, nil
			}
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN, nil:
			return total, nil
		}
		return total, err
	}
}

// flushFDLocked writes queued bytes without blocking; what does not fit
// waits for EPOLLOUT.
func (c *Conn) flushFDLocked() {
	for c.outOff < len(c.out) {
		n, err := rawWrite(c.fd, c.out[c.outOff:])
		if n > 0 {
			c.advanceLocked(n)
			if c.closed {
				return
			}
			continue
		}
		switch err {
		case unix.EINTR:
			continue
		case unix.EAGAIN, nil:
			return
		}
		c.abortLocked(err)
		return
	}
}

// The descriptors of the loops are non-blocking, so their reads and writes
// never wait: they are made as raw system calls, without telling the
// scheduler that the goroutine might block (which costs more than the call
// itself for small messages).

func rawRead(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func rawWritev(fd int, bufs [][]byte) (int, error) {
	var iov [2]syscall.Iovec
	n := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
		if n == len(iov) {
			break
		}
	}
	if n == 0 {
		return 0, nil
	}
	r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
