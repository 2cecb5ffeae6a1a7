//go:build linux

package wsgate

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
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

	mu    sync.Mutex
	tasks []task
	// asleep: the loop may be parked in wait, so post must write the
	// eventfd. While it is awake, posted tasks run before it waits again
	// and cost no system call; a loop that closes connections it serves,
	// or adds the ones it accepted, never wakes itself.
	asleep  bool
	stopped bool   // the descriptors are closed: post must not touch them
	running []task // the loop's own copy of tasks being run

	conns   []*Conn // indexed by fd; loop goroutine only
	buf     []byte
	pending []*Conn // connections with more input to read

	// A Server's listeners and the connections whose first request is
	// being read (serve_linux.go); loop goroutine only.
	listeners  map[int]*fastListener
	handshakes map[int]*pendingConn
	nPending   atomic.Int64 // len(handshakes), for the sweeper

	stats loopCounters
}

const (
	readBufSize   = 64 << 10
	readsPerEvent = 8
)

// startLoops starts the event loops: one per usable CPU unless
// SetEventLoops said otherwise. It fails when a loop's descriptors cannot
// be created (for example when the process is out of file descriptors); no
// loop is left running then.
func startLoops() ([]*loop, error) {
	n := int(eventLoops.Load())
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	loops := make([]*loop, 0, n)
	for range n {
		l, err := newLoop()
		if err != nil {
			for _, l := range loops {
				l.post(task{kind: taskStop})
			}
			return nil, fmt.Errorf("starting an event loop: %w", err)
		}
		loops = append(loops, l)
		go l.run()
	}
	return loops, nil
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
// is ready, no input is pending and no task is waiting (busy), parks in the runtime's poller until
// the epoll descriptor becomes readable.
func (l *loop) wait(busy bool) (int, error) {
	l.block = !busy && len(l.pending) == 0
	if err := l.erc.Read(l.pollFn); err != nil {
		return 0, err
	}
	return l.nready, nil
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

// post queues a task for the loop goroutine and wakes it. The wake-up is
// written under l.mu, so it can never reach an eventfd that a stopping
// loop has closed (and whose number may have been reused).
func (l *loop) post(t task) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return
	}
	l.tasks = append(l.tasks, t)
	if l.asleep {
		l.asleep = false
		var one = [8]byte{1}
		rawWrite(l.evfd, one[:])
	}
}

func (l *loop) run() {
	defer l.shutdown()
	for {
		// What was posted while the loop was awake runs now, before it
		// waits; only an empty queue lets it sleep.
		stop, more := l.runTasks(nanotime())
		if stop {
			return
		}
		n, err := l.wait(more)
		if err != nil {
			l.failAll(fmt.Errorf("%w: epoll: %w", ErrEngine, err))
			return
		}
		l.mu.Lock()
		l.asleep = false
		l.mu.Unlock()
		now := nanotime()
		l.stats.wakeups.Add(1)
		l.stats.events.Add(uint64(n))
		for i := 0; i < n; i++ {
			ev := &l.events[i]
			fd := int(ev.Fd)
			if fd == l.evfd {
				var b [8]byte
				rawRead(l.evfd, b[:])
				continue
			}
			if fd >= len(l.conns) || l.conns[fd] == nil {
				l.other(fd, ev.Events, now)
				continue
			}
			l.serve(l.conns[fd], ev.Events, now)
		}
		if len(l.pending) > 0 {
			p := l.pending
			l.pending = nil
			for i, c := range p {
				p[i] = nil
				if c.fd >= 0 && c.fd < len(l.conns) && l.conns[c.fd] == c {
					l.serve(c, 0, now)
				}
			}
		}
	}
}

// serve handles one connection's events (none: continue pending work). A
// panic there (a bug) costs that connection, not the loop that serves the
// others.
func (l *loop) serve(c *Conn, events uint32, now int64) {
	defer func() {
		if r := recover(); r != nil {
			c.mu.Lock()
			c.corked = false
			c.abortLocked(fmt.Errorf("%w: event loop: %v", ErrInternal, r))
			c.mu.Unlock()
		}
	}()
	if events == 0 {
		l.resume(c, now)
		return
	}
	if events&unix.EPOLLOUT != 0 {
		c.mu.Lock()
		c.flushLocked(false)
		c.mu.Unlock()
	}
	if events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		l.read(c, now, true)
	} else if events&unix.EPOLLIN != 0 {
		l.read(c, now, false)
	}
}

// runTasks runs the tasks posted so far and reports whether the loop must
// exit and whether more were posted meanwhile. With none left it marks the
// loop asleep, since it is about to wait: from then on post wakes it.
func (l *loop) runTasks(now int64) (stop, more bool) {
	l.mu.Lock()
	if len(l.tasks) > 0 {
		l.running, l.tasks = l.tasks, l.running[:0]
		l.mu.Unlock()
		if l.runPosted(now) {
			return true, false
		}
		l.mu.Lock()
	}
	more = len(l.tasks) > 0
	l.asleep = !more
	l.mu.Unlock()
	return false, more
}

// runPosted runs one batch of posted tasks and reports whether one of them
// stops the loop.
func (l *loop) runPosted(now int64) bool {
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
			if t.c.fd >= 0 && t.c.fd < len(l.conns) && l.conns[t.c.fd] == t.c {
				l.serve(t.c, 0, now)
			}
		case taskFlush:
			c := t.c
			c.mu.Lock()
			c.flushPosted = false
			c.flushLocked(false)
			c.mu.Unlock()
		case taskListen:
			l.listen(t.fl)
		case taskUnlisten:
			l.unlisten(t.fl)
		case taskSweep:
			l.sweepPending(now)
		case taskStop:
			stop = true
		}
	}
	return stop
}

// shutdown closes the loop's own descriptors once it exits. Under l.mu, so
// that post never writes to a closed eventfd.
func (l *loop) shutdown() {
	for _, p := range l.handshakes {
		l.forgetPending(p)
		l.dropPending(p)
	}
	for _, fl := range l.listeners {
		l.unlisten(fl)
	}
	l.mu.Lock()
	l.stopped = true
	l.tasks = nil
	unix.Close(l.evfd)
	l.mu.Unlock()
	l.epf.Close()
}

// failAll ends every connection of a loop that cannot go on.
func (l *loop) failAll(err error) {
	for fd, c := range l.conns {
		if c == nil {
			continue
		}
		l.conns[fd] = nil
		l.stats.conns.Add(-1)
		c.mu.Lock()
		c.abortLocked(err)
		unix.Close(fd)
		c.mu.Unlock()
		c.finish()
	}
}

func (l *loop) add(c *Conn, leftover []byte, now int64) {
	fd := c.fd
	for fd >= len(l.conns) {
		l.conns = append(l.conns, make([]*Conn, len(l.conns)+64)...)
	}
	l.conns[fd] = c
	l.stats.conns.Add(1)
	c.callOnOpen()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		c.mu.Lock()
		c.abortLocked(err)
		c.mu.Unlock()
		return
	}
	if len(leftover) > 0 {
		l.feed(c, leftover, now)
		if c.rs.paused {
			// Inflating, or the receive queue filled up: continue later.
			l.pending = append(l.pending, c)
		}
	}
}

func (l *loop) close(c *Conn) {
	fd := c.fd
	if fd < 0 || fd >= len(l.conns) || l.conns[fd] != c {
		return
	}
	l.conns[fd] = nil
	l.stats.conns.Add(-1)
	// No EPOLL_CTL_DEL: ours is the only descriptor of the socket, and
	// closing it removes it from the epoll set.
	c.mu.Lock()
	rawClose(fd)
	c.mu.Unlock()
	c.finish()
}

// resume continues a connection that paused: an inflation in progress, a
// receive queue that has room again, or output that drained.
func (l *loop) resume(c *Conn, now int64) {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
	ok := c.tryResume(now)
	stuck := l.uncork(c)
	if c.rs.inflating != nil {
		l.pending = append(l.pending, c)
		return
	}
	if ok && !stuck {
		l.read(c, now, true)
	}
}

// feed parses input with writes corked, so that every reply produced while
// handling one read goes out in one system call. It reports whether the
// connection's output is stuck, in which case reading must wait.
func (l *loop) feed(c *Conn, p []byte, now int64) bool {
	c.mu.Lock()
	c.corked = true
	c.mu.Unlock()
	c.feed(p, now)
	return l.uncork(c)
}

// uncork flushes what the input produced and reports whether the output
// is stuck.
func (l *loop) uncork(c *Conn) bool {
	c.mu.Lock()
	c.corked = false
	c.flushLocked(false)
	stuck := c.outStuck
	c.mu.Unlock()
	c.budgetCheck()
	return stuck
}

// read drains the socket (edge-triggered), a bounded number of reads at a
// time so that one busy peer cannot starve the others. A short read means
// the socket is empty unless the peer's FIN may already be waiting behind
// the data (drain): then it reads on until EAGAIN or EOF. Reading stops
// while the connection is paused or its output is stuck; whoever unpauses
// it (Read making room, the socket draining) posts a resume.
func (l *loop) read(c *Conn, now int64, drain bool) {
	fd := c.fd
	for i := 0; i < readsPerEvent; i++ {
		if c.rs.paused {
			if c.rs.inflating != nil {
				l.pending = append(l.pending, c)
			}
			return
		}
		c.mu.Lock()
		stuck := c.outStuck
		c.mu.Unlock()
		if stuck {
			return // resumed by advanceLocked when the output drains
		}
		n, err := rawRead(fd, l.buf)
		if n > 0 {
			if l.feed(c, l.buf[:n], now) {
				return // resumed by advanceLocked when the output drains
			}
			if c.rs.paused {
				continue // the check above decides
			}
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

// dupFD gives a TCP or Unix socket a descriptor of its own, to move it out
// of the Go runtime's poller into an event loop; ok is false for other
// connections (TLS, pipes), which keep the reader-goroutine transport. The
// duplicate shares the open file description, which the runtime already
// made non-blocking, so no fcntl is needed. Closing nc afterwards (run
// does) costs the runtime's epoll_ctl and close; the loop adds its own
// epoll_ctl.
func dupFD(nc net.Conn) (fd int, ok bool, err error) {
	var raw interface {
		SyscallConn() (syscall.RawConn, error)
	}
	switch t := nc.(type) {
	case *net.TCPConn:
		raw = t
	case *net.UnixConn:
		raw = t
	case *replayConn:
		if t.replaying() {
			// Bytes the loop read are still to be read through t: keep
			// the connection on the reader-goroutine transport.
			return -1, false, nil
		}
		raw = t
	default:
		return -1, false, nil
	}
	rc, err := raw.SyscallConn()
	if err != nil {
		return -1, false, nil
	}
	nfd := -1
	var derr error
	err = rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return -1, false, nil
	}
	if derr != nil {
		return -1, false, fmt.Errorf("dup: %w", derr)
	}
	return nfd, true, nil
}

// closeFD closes a descriptor from dupFD that never reached a loop.
func closeFD(fd int) { unix.Close(fd) }

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
func (c *Conn) flushFDLocked() (int, error) {
	total := 0
	if pm := c.lone; pm != nil {
		// Nothing else is queued: the shared frame goes out from where it
		// is, and only what the socket does not take is copied.
		c.lone = nil
		frame := pm.frameFor(c.deflate)
		if err := c.writeDirectLocked(byte(pm.typ), false, nil, frame, len(pm.data)); err != nil {
			return 0, err
		}
		// What is queued now is the part the socket did not take; it
		// waits for EPOLLOUT.
		return len(frame) - (len(c.q.out) - c.q.outOff), nil
	}
	for c.q.outOff < len(c.q.out) {
		n, err := rawWrite(c.fd, c.q.out[c.q.outOff:])
		if n > 0 {
			total += n
			c.advanceLocked(n)
			if c.phase >= phaseDown {
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
		c.abortLocked(err)
		return total, err
	}
	return total, nil
}

// The descriptors of the loops are non-blocking, so their reads and writes
// never wait: they are made as raw system calls, without telling the
// scheduler that the goroutine might block (which costs more than the call
// itself for small messages).

// rawClose closes a socket the loop owns. Closing a socket without
// SO_LINGER does not block, so it needs no hand-off of the P.
func rawClose(fd int) {
	syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
}

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

// stats returns the loop's counters.
func (l *loop) counters() *loopCounters { return &l.stats }
