package wsgate

import (
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
}

// netReadBufSize is the read buffer of a reader goroutine.
const netReadBufSize = 4 << 10

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
	// Small: the reader holds it for the connection's whole life, and a
	// TLS connection keeps whole records in buffers of its own anyway.
	buf := make([]byte, netReadBufSize)
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
		c.nt.nc.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
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
