package wsgate

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// engine owns the goroutines shared by connections: the event loops (on
// Linux) and the sweeper that runs every connection's timers. It starts them
// with the first connection and stops them when the last one has finished,
// so an idle program runs none of them.
type engine struct {
	mu    sync.Mutex
	conns map[*Conn]struct{}
	loops []*loop
	next  int
	every time.Duration // sweep interval
	stop  chan struct{} // closed to stop this generation's sweeper
}

var defaultEngine engine

// task is a request to an event loop, posted from any goroutine.
type task struct {
	c    *Conn
	kind taskKind
	data []byte // taskAdd: input read past the handshake
}

type taskKind uint8

const (
	taskAdd    taskKind = iota // start serving c
	taskClose                  // close c's descriptor and finish c
	taskResume                 // c's receive queue has room again
	taskStop                   // no connection is left: exit
)

const (
	maxSweep = time.Second
	minSweep = 5 * time.Millisecond
)

// register adds c and, when wantLoop, returns the event loop to serve it.
func (e *engine) register(c *Conn, wantLoop bool) *loop {
	g := granularity(c.cfg)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conns == nil {
		e.conns = make(map[*Conn]struct{})
		e.every = g
		e.stop = make(chan struct{})
		go e.sweep(e.stop, g)
	}
	if g < e.every {
		e.every = g
	}
	e.conns[c] = struct{}{}
	if !wantLoop {
		return nil
	}
	if e.loops == nil {
		e.loops = startLoops()
	}
	l := e.loops[e.next%len(e.loops)]
	e.next++
	return l
}

// unregister removes a finished connection and stops the engine when none
// is left.
func (e *engine) unregister(c *Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.conns, c)
	if len(e.conns) > 0 {
		return
	}
	close(e.stop)
	for _, l := range e.loops {
		l.post(task{kind: taskStop})
	}
	e.conns, e.loops, e.stop = nil, nil, nil
}

// granularity is how often c's timers need checking.
func granularity(cfg *connConfig) time.Duration {
	g := maxSweep
	for _, d := range []time.Duration{cfg.PingInterval, cfg.PingTimeout, cfg.WriteTimeout, cfg.CloseTimeout} {
		if d > 0 && d/4 < g {
			g = d / 4
		}
	}
	return max(g, minSweep)
}

// sweep runs every connection's timers until stop is closed.
func (e *engine) sweep(stop chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var snap []*Conn
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		e.mu.Lock()
		if e.stop != stop {
			e.mu.Unlock()
			return
		}
		snap = snap[:0]
		for c := range e.conns {
			snap = append(snap, c)
		}
		want := e.every
		e.mu.Unlock()
		now := nanotime()
		for _, c := range snap {
			c.tick(now)
		}
		clear(snap)
		if want != every {
			every = want
			t.Reset(every)
		}
	}
}

// start connects c to a transport: an event loop when the platform has one
// and nc exposes a socket, else a reader goroutine.
func start(c *Conn, nc net.Conn, leftover []byte) {
	if fd, ok := takeFD(nc); ok {
		c.fd = fd
		c.loop = defaultEngine.register(c, true)
		c.loop.post(task{c: c, kind: taskAdd, data: leftover})
		return
	}
	c.nt = &netTransport{nc: nc, resume: make(chan struct{}, 1)}
	defaultEngine.register(c, false)
	go c.readNet(leftover)
}

// readNet is the reader goroutine of a net.Conn transport.
func (c *Conn) readNet(leftover []byte) {
	defer c.finish()
	if len(leftover) > 0 {
		c.lastRecv.Store(nanotime())
		c.feed(leftover, nanotime())
	}
	buf := make([]byte, 16<<10)
	for {
		if c.rs.paused {
			<-c.nt.resume
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if closed {
				return
			}
			if c.rq.isPaused() {
				continue
			}
			c.rs.paused = false
			c.feed(c.rs.stash, nanotime())
			continue
		}
		n, err := c.nt.nc.Read(buf)
		if n > 0 {
			now := nanotime()
			c.lastRecv.Store(now)
			c.feed(buf[:n], now)
		}
		if err != nil {
			c.mu.Lock()
			if c.closed {
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			if err == io.EOF {
				c.onEOF()
			} else {
				c.mu.Lock()
				c.abortLocked(err)
				c.mu.Unlock()
			}
			return
		}
	}
}

// flushNetLocked writes out to the net.Conn. c.mu is released while the
// write is in progress; other writers append meanwhile and this goroutine
// writes their bytes too before it returns.
func (c *Conn) flushNetLocked() {
	if c.writing {
		return
	}
	c.writing = true
	for !c.closed && c.outOff < len(c.out) {
		buf := c.out[c.outOff:]
		c.inflight = len(c.out)
		c.mu.Unlock()
		c.nt.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
		n, err := c.nt.nc.Write(buf)
		c.mu.Lock()
		c.inflight = 0
		c.advanceLocked(n)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				err = fmt.Errorf("%w: %w", ErrWriteTimeout, err)
			}
			c.abortLocked(err)
		}
	}
	c.writing = false // advanceLocked released the drained buffer
}

// Pools of buffers for queued frames and compressed payloads.
var (
	outPool sync.Pool // *[]byte
	bufPool sync.Pool // *[]byte
)

func getOut(n int) []byte {
	if n <= 32<<10 {
		if p, ok := outPool.Get().(*[]byte); ok {
			return (*p)[:0]
		}
		return make([]byte, 0, 32<<10)
	}
	return make([]byte, 0, n)
}

func putOut(b []byte) {
	if cap(b) == 32<<10 {
		b = b[:0]
		outPool.Put(&b)
	}
}

func getBuffer() *[]byte {
	if p, ok := bufPool.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, 4096)
	return &b
}

func putBuffer(p *[]byte) {
	if cap(*p) <= 1<<20 {
		*p = (*p)[:0]
		bufPool.Put(p)
	}
}

// maskKey returns a fresh masking key. math/rand/v2's global source is a
// cryptographically strong generator, as RFC 6455 section 5.3 asks.
func maskKey() uint32 { return rand.Uint32() }
