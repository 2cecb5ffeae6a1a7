package wsgate

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"time"
)

// netTransport is the state of the net.Conn transport: one reader goroutine
// per connection, for TLS, Wrap and platforms without epoll.
type netTransport struct {
	nc     net.Conn
	resume chan struct{} // wakes the reader goroutine when it paused

	// writeDeadline is the write deadline set on nc; only the goroutine
	// that is writing (c.writing) touches it.
	writeDeadline time.Time
}

// The read buffer of a reader goroutine, held for the connection's whole
// life. A TLS connection keeps each record whole in crypto/tls's own
// buffer, so reading it in small pieces costs a copy and no system call:
// its buffer is small. Anything else reads the socket directly with each
// Read and gets a larger one.
const (
	netReadBufSize    = 4 << 10
	netReadBufSizeTLS = 1 << 10
)

// netReadBufFor returns the read buffer size for nc.
func netReadBufFor(nc net.Conn) int {
	if _, ok := nc.(*tls.Conn); ok {
		return netReadBufSizeTLS
	}
	return netReadBufSize
}

// readNet is the reader goroutine of a net.Conn transport. It owns the
// connection's end: when reading stops, it finishes the Conn.
func (c *Conn) readNet(leftover []byte) {
	defer c.finish()
	defer func() {
		if r := recover(); r != nil {
			c.mu.Lock()
			c.abortLocked(fmt.Errorf("%w: reader: %v", ErrInternal, r))
			c.mu.Unlock()
		}
	}()
	c.callOnOpen()
	if len(leftover) > 0 {
		c.feed(leftover, nanotime())
		c.budgetCheck()
	}
	buf := make([]byte, netReadBufFor(c.nt.nc))
	for {
		if c.rs.paused {
			<-c.nt.resume
			c.mu.Lock()
			down := c.phase >= phaseDown
			c.mu.Unlock()
			if down {
				return
			}
			c.tryResume(nanotime())
			continue
		}
		n, err := c.nt.nc.Read(buf)
		if n > 0 {
			c.feed(buf[:n], nanotime())
			c.budgetCheck()
		}
		if err != nil {
			c.mu.Lock()
			if c.phase >= phaseDown {
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

// extendWriteDeadline makes sure a write starting now has at least
// WriteTimeout before its deadline. Moving a deadline costs a timer update
// in the runtime, so it moves a quarter of WriteTimeout further than
// needed and stays put while that margin lasts: a write gets between
// WriteTimeout and 1.25 × WriteTimeout, and a stream of small writes moves
// it once every WriteTimeout/4 instead of every time. (The engine's
// sweeper closes the connection after WriteTimeout without progress as
// well; the deadline also ends a write that is stuck in the transport.)
// The caller is the writing goroutine (c.writing).
func (c *Conn) extendWriteDeadline() {
	wt := c.cfg.WriteTimeout
	now := time.Now()
	if c.nt.writeDeadline.Sub(now) >= wt {
		return
	}
	c.nt.writeDeadline = now.Add(wt + wt/4)
	c.nt.nc.SetWriteDeadline(c.nt.writeDeadline)
}

// flushNetLocked writes out to the net.Conn. c.mu is released while the
// write is in progress; other writers append meanwhile and this goroutine
// writes their bytes too before it returns. It returns how many bytes it
// wrote and the error that stopped it.
func (c *Conn) flushNetLocked() (int, error) {
	if c.writing {
		return 0, nil
	}
	c.writing = true
	total := 0
	var werr error
	for c.phase < phaseDown && c.q.outOff < len(c.q.out) {
		buf := c.q.out[c.q.outOff:]
		c.q.inflight = len(c.q.out)
		c.mu.Unlock()
		c.extendWriteDeadline()
		n, err := c.nt.nc.Write(buf)
		c.mu.Lock()
		c.q.inflight = 0
		total += n
		c.advanceLocked(n)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				err = fmt.Errorf("%w: %w", ErrWriteTimeout, err)
			}
			c.abortLocked(err)
			werr = err
		}
	}
	if c.phase >= phaseDown && werr == nil {
		// The transport is going: what is left will never be written.
		werr = net.ErrClosed
	}
	c.writing = false // advanceLocked released the drained buffer
	return total, werr
}

// closeNetConn closes the transport without writing to it. A *tls.Conn's
// own Close first sends a close_notify alert and waits up to 5 seconds for
// a peer that does not read to take it, and the caller holds c.mu. The
// WebSocket closing handshake travels inside the TLS stream, so it already
// tells the peer that the stream ended where it should; the alert adds
// nothing to it.
func closeNetConn(nc net.Conn) {
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	nc.Close()
}
