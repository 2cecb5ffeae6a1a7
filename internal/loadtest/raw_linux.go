//go:build linux

package loadtest

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Raw mode measures the generator's own ceiling. It writes pre-built masked
// client frames over plain TCP, without a WebSocket handshake, to a byte
// echo server (bench/servers/tcpecho), which sends the same bytes back.
// Every frameLen bytes that return complete one round trip. One goroutine
// runs all connections on an epoll loop, so the cost per message is a share
// of one read and one write system call: the least a WebSocket client can
// spend. Its rate against tcpecho bounds what any server can be shown to do
// with this machine's generator core.

// rawConn is one raw connection's state; only the loop goroutine uses it.
type rawConn struct {
	fd    int
	got   int     // bytes of the current reply received
	owe   int     // bytes queued but not written yet
	off   int     // write position within the repeating frame stream
	sent  []int64 // send times of frames in flight, a ring
	head  int
	count int
}

type rawRun struct {
	cfg      *Config
	frameLen int
	batch    []byte // Inflight+1 copies of the frame, back to back
	conns    []*rawConn
	byFD     map[int]*rawConn
	epfd     int
	base     time.Time
	phase    atomic.Int32
	replies  atomic.Uint64
	measured atomic.Uint64
	sentN    atomic.Uint64
	lat      *latencies
	errs     *errorCounter
	alive    int
}

// rawFrame builds one masked client frame with a size-byte payload.
func rawFrame(size int, bin bool) []byte {
	op := byte(0x1)
	if bin {
		op = 0x2
	}
	f := []byte{0x80 | op}
	switch {
	case size < 126:
		f = append(f, 0x80|byte(size))
	case size <= 0xFFFF:
		f = append(f, 0x80|126, byte(size>>8), byte(size))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(size))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	f = append(f, key[:]...)
	for i, b := range newPayload(size) {
		f = append(f, b^key[i&3])
	}
	return f
}

func runRaw(ctx context.Context, cfg *Config, rep *Report) error {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	d, err := newDialer(cfg.URL, cfg.SrcIPs)
	if err != nil {
		return err
	}
	frame := rawFrame(cfg.Size, cfg.Binary)
	r := &rawRun{
		cfg:      cfg,
		frameLen: len(frame),
		byFD:     make(map[int]*rawConn),
		base:     time.Now(),
		lat:      newLatencies(),
		errs:     newErrorCounter(),
	}
	for range cfg.Inflight + 1 {
		r.batch = append(r.batch, frame...)
	}
	r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("loadtest: raw: epoll: %w", err)
	}
	defer unix.Close(r.epfd)

	var cc connCounter
	fds := make([]int, cfg.Conns)
	for i := range fds {
		fds[i] = -1
	}
	ramp(ctx, cfg.Conns, 0, 64, func(i int) bool {
		cc.attempted.Add(1)
		dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
		defer cancel()
		nc, err := d.dialContext(dctx, "tcp", u.Host)
		if err != nil {
			return dialFailed(ctx, r.errs, err)
		}
		fd, err := detachFD(nc)
		if err != nil {
			r.errs.add("dial: other", err)
			return true
		}
		fds[i] = fd
		cc.established.Add(1)
		return true
	})
	defer func() {
		for _, c := range r.conns {
			if c.fd >= 0 {
				unix.Close(c.fd)
			}
		}
	}()
	for _, fd := range fds {
		if fd < 0 {
			continue
		}
		c := &rawConn{fd: fd, sent: make([]int64, cfg.Inflight)}
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
		if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			unix.Close(fd)
			r.errs.add("raw: epoll_ctl", err)
			continue
		}
		r.conns = append(r.conns, c)
		r.byFD[fd] = c
	}
	r.alive = len(r.conns)

	if cfg.Progress != nil {
		var rm rateMeter
		stop := progressLine(cfg.Progress, func() string {
			return fmt.Sprintf("raw %s  conns %d  %.0f msgs/s  errors %d", phaseName(r.phase.Load()), len(r.conns), rm.rate(r.replies.Load()), r.errs.count())
		})
		defer stop()
	}

	if cfg.Warmup > 0 {
		r.phase.Store(phaseWarmup)
	} else {
		r.phase.Store(phaseMeasure)
	}
	loopDone := make(chan struct{})
	self := startSelf()
	srv := watchProc(cfg.PID)
	go func() {
		defer close(loopDone)
		r.loop()
	}()
	warmUp(ctx, cfg, &r.phase, srv, self)
	start := time.Now()
	var deadline <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		deadline = t.C
	}
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-deadline:
			break wait
		case <-loopDone:
			break wait
		case <-poll.C:
			if cfg.Count > 0 && int64(r.measured.Load()) >= cfg.Count {
				break wait
			}
		}
	}
	r.phase.Store(phaseStop)
	elapsed := time.Since(start)
	rep.Generator = self.stop()
	srvStats, srvErr := srv.finish(true)
	<-loopDone

	rep.Seconds = elapsed.Seconds()
	rep.Attempted, rep.Established = cc.attempted.Load(), cc.established.Load()
	rep.Messages = r.measured.Load()
	if cfg.Count > 0 {
		rep.Messages = min(rep.Messages, uint64(cfg.Count))
	}
	rep.ops = r.sentN.Load() + rep.Attempted
	rep.Latency = summarize(r.lat.merged())
	rep.Errors = r.errs.list()
	rep.Server = srvStats
	if srvErr != nil {
		rep.Notes = append(rep.Notes, "server stats: "+srvErr.Error())
	}
	rep.Notes = append(rep.Notes, fmt.Sprintf("raw TCP: %d-byte masked frames echoed byte for byte, no WebSocket parsing", r.frameLen))
	return nil
}

// loop runs every connection until the run stops or all have failed.
func (r *rawRun) loop() {
	for _, c := range r.conns {
		r.queue(c, r.cfg.Inflight)
		r.flush(c)
	}
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	shard := r.lat.shard(0)
	for r.phase.Load() != phaseStop && r.alive > 0 {
		n, err := unix.EpollWait(r.epfd, events, 10)
		if err != nil && err != unix.EINTR {
			r.errs.add("raw: epoll_wait", err)
			return
		}
		for i := 0; i < n; i++ {
			c := r.byFD[int(events[i].Fd)]
			if c == nil || c.fd < 0 {
				continue
			}
			if events[i].Events&unix.EPOLLOUT != 0 {
				r.flush(c)
			}
			if events[i].Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				r.read(c, buf, shard)
			}
		}
	}
}

// queue puts k more frames in flight on c.
func (r *rawRun) queue(c *rawConn, k int) {
	now := int64(time.Since(r.base))
	for range k {
		c.sent[(c.head+c.count)%len(c.sent)] = now
		c.count++
	}
	c.owe += k * r.frameLen
}

// flush writes what c owes, from the repeating frame stream.
func (r *rawRun) flush(c *rawConn) {
	for c.owe > 0 && c.fd >= 0 {
		n, err := unix.Write(c.fd, r.batch[c.off:c.off+c.owe])
		if n > 0 {
			c.owe -= n
			c.off = (c.off + n) % r.frameLen
			continue
		}
		if err == unix.EINTR {
			continue
		}
		if err != unix.EAGAIN {
			r.fail(c, "raw: write", err)
		}
		return
	}
}

// read drains c and answers every complete reply with a new frame.
func (r *rawRun) read(c *rawConn, buf []byte, shard *latencyShard) {
	done := 0
	for c.fd >= 0 {
		n, err := unix.Read(c.fd, buf)
		if n > 0 {
			c.got += n
			done += c.got / r.frameLen
			c.got %= r.frameLen
			continue
		}
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if n == 0 && err == nil {
			err = fmt.Errorf("server closed the connection")
		}
		if r.phase.Load() != phaseStop {
			r.fail(c, "raw: connection lost", err)
		}
		return
	}
	if done == 0 {
		return
	}
	if done > c.count {
		r.fail(c, "raw: more bytes than sent", fmt.Errorf("%d replies for %d frames in flight", done, c.count))
		return
	}
	now := int64(time.Since(r.base))
	measuring := r.phase.Load() == phaseMeasure
	for range done {
		sent := c.sent[c.head]
		c.head = (c.head + 1) % len(c.sent)
		c.count--
		if measuring {
			shard.record(now - sent)
		}
	}
	r.replies.Add(uint64(done))
	if measuring {
		r.measured.Add(uint64(done))
	}
	if ph := r.phase.Load(); ph == phaseWarmup || ph == phaseMeasure {
		r.queue(c, done)
		r.sentN.Add(uint64(done))
		r.flush(c)
	}
}

func (r *rawRun) fail(c *rawConn, kind string, err error) {
	r.errs.add(kind, err)
	unix.EpollCtl(r.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	unix.Close(c.fd)
	delete(r.byFD, c.fd)
	c.fd = -1
	r.alive--
}

// detachFD takes a non-blocking duplicate of nc's socket out of the Go
// runtime's poller and closes nc.
func detachFD(nc net.Conn) (int, error) {
	defer nc.Close()
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return -1, fmt.Errorf("not a TCP connection")
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) {
		fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// peerClosed reports, without waiting, whether the peer of an idle socket
// has ended the connection (or sent something, which an idle server must
// not either).
func peerClosed(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		closed = err != unix.EAGAIN && (err != nil || n == 0)
	})
	return closed
}
