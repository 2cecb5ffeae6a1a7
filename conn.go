package wsgate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Conn is a WebSocket connection, client or server side.
//
// Concurrency: every method may be called from any number of goroutines at
// once. Writes from different goroutines never interleave within a message;
// each Read or ReadMessage call receives whole messages, each message going
// to exactly one caller, in order.
//
// Reading: a Conn reads from the network by itself. Received messages either
// go to Options.OnMessage (event-driven mode, no goroutine per connection) or
// wait in a bounded receive queue for Read and ReadMessage. When that queue
// is full the Conn stops reading until the application catches up.
//
// Writing: Write and WriteMessage encode the message and hand it to the
// socket at once when nothing else is queued, without switching goroutines;
// otherwise the message joins a bounded send queue that is flushed in as few
// system calls as possible. Options.SendQueuePolicy says what happens when
// the peer reads too slowly for the queue.
//
// Closing: Close and CloseWithStatus start the closing handshake and return
// at once: what was queued before is flushed, then the close frame is sent,
// and the Conn waits (at most Options.CloseTimeout) for the peer's close
// frame before closing the TCP connection. Calling them again is harmless.
// Done is closed when the connection has ended and Err then says why. After
// Close, writes fail with an error matching ErrClosed and net.ErrClosed;
// reads first return the messages received before the end, then fail the
// same way. No goroutine started for the connection outlives it.
type Conn struct {
	cfg         *connConfig
	server      bool
	subprotocol string
	// Addresses: TCP ones as values (no allocation held per connection),
	// others as given.
	lap, rap     netip.AddrPort
	laddr, raddr net.Addr
	deflate      *deflater // nil unless permessage-deflate was negotiated

	// Exactly one transport: a file descriptor served by an event loop
	// (fd >= 0, loop != nil), or a net.Conn with a reader goroutine.
	fd   int
	loop *loop
	nt   *netTransport

	rs readState // owned by whichever goroutine reads: the loop or the reader

	mu           sync.Mutex
	out          []byte  // encoded frames not yet written; out[:outOff] is written
	outOff       int     // bytes of out already written
	inflight     int     // end of the region a reader goroutine is writing, 0 when none
	marks        []qmark // one per queued frame, in order
	qMsgs        int     // data messages in out
	qBytes       int     // their payload bytes
	writing      bool    // a goroutine is writing out to a net.Conn
	corked       bool    // the loop is processing input: flush after it
	lastProgress int64   // nanotime of the last write progress while out is non-empty
	closeSent    bool    // our close frame is queued
	closeWritten bool    // ...and written
	closeRecv    bool    // the peer's close frame arrived
	closed       bool    // the transport is being or has been torn down
	failed       bool    // we failed the connection: no reply close is awaited
	halfClosed   bool    // our side of TCP is shut down after a failure
	deadline     int64   // nanotime by which the closing handshake must end
	lastPing     int64   // nanotime of the last ping sent
	pingAt       int64   // nanotime of the oldest unanswered ping, 0 if none
	cause        error   // why the connection ends; set once
	spaceCh      chan struct{}
	hdr          [maxHeaderLen]byte

	done     chan struct{} // made by Done on demand, closed by finish
	finished bool          // finish has run
	rq       *recvQueue    // nil in event-driven mode

	lastRecv atomic.Int64
	rtt      atomic.Int64
	msgsIn   atomic.Uint64
	msgsOut  atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	dropped  atomic.Uint64
}

// netTransport is the state of the net.Conn transport.
type netTransport struct {
	nc     net.Conn
	resume chan struct{} // wakes the reader goroutine when it paused
}

// qmark records where a queued frame ends in out.
type qmark struct {
	end  int
	size int // payload bytes for a data message, -1 for a control frame
	op   byte
}

// Stats is a snapshot of a connection's counters.
type Stats struct {
	MessagesIn  uint64        // data messages received
	BytesIn     uint64        // their payload bytes (after decompression)
	MessagesOut uint64        // data messages accepted for sending
	BytesOut    uint64        // their payload bytes (before compression)
	Dropped     uint64        // messages discarded by the send queue policy
	QueuedMsgs  int           // data messages waiting in the send queue
	QueuedBytes int           // their payload bytes
	RTT         time.Duration // round trip of the last answered ping, 0 if none yet
}

var epoch = time.Now()

// nanotime is a cheap monotonic clock.
func nanotime() int64 { return int64(time.Since(epoch)) }

// newConn wraps an established WebSocket connection. leftover holds bytes
// already read past the handshake.
func newConn(nc net.Conn, server bool, cfg *config, sub string, dp *deflateParams, leftover []byte) *Conn {
	c := &Conn{
		cfg:         cfg.conn(),
		server:      server,
		subprotocol: sub,
		fd:          -1,
	}
	if a, ok := nc.LocalAddr().(*net.TCPAddr); ok {
		c.lap = a.AddrPort()
	} else {
		c.laddr = nc.LocalAddr()
	}
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		c.rap = a.AddrPort()
	} else {
		c.raddr = nc.RemoteAddr()
	}
	if dp != nil {
		c.deflate = newDeflater(*dp, server)
	}
	if cfg.OnMessage == nil {
		c.rq = &recvQueue{notify: make(chan struct{}, 1)}
	}
	now := nanotime()
	c.lastRecv.Store(now)
	c.lastPing = now
	if len(leftover) > 0 {
		leftover = append([]byte(nil), leftover...)
	}
	start(c, nc, leftover)
	return c
}

// Subprotocol returns the subprotocol agreed in the handshake, or "".
func (c *Conn) Subprotocol() string { return c.subprotocol }

// Compressed reports whether permessage-deflate was negotiated.
func (c *Conn) Compressed() bool { return c.deflate != nil }

// LocalAddr returns the local network address.
func (c *Conn) LocalAddr() net.Addr {
	if c.laddr != nil {
		return c.laddr
	}
	return net.TCPAddrFromAddrPort(c.lap)
}

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.raddr != nil {
		return c.raddr
	}
	return net.TCPAddrFromAddrPort(c.rap)
}

// Done returns a channel that is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Made on first use: most event-driven connections never need one.
	if c.done == nil {
		c.done = make(chan struct{})
		if c.finished {
			close(c.done)
		}
	}
	return c.done
}

// Err returns nil while the connection is open and, once Done is closed, a
// *CloseError that says why it ended.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.finished {
		return nil
	}
	return c.cause
}

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	qm, qb := c.qMsgs, c.qBytes
	c.mu.Unlock()
	return Stats{
		MessagesIn:  c.msgsIn.Load(),
		BytesIn:     c.bytesIn.Load(),
		MessagesOut: c.msgsOut.Load(),
		BytesOut:    c.bytesOut.Load(),
		Dropped:     c.dropped.Load(),
		QueuedMsgs:  qm,
		QueuedBytes: qb,
		RTT:         time.Duration(c.rtt.Load()),
	}
}

// ReadMessage waits for the next message and returns its payload. It is the
// tutorial's API; Read also returns the message type.
func (c *Conn) ReadMessage() ([]byte, error) {
	_, p, err := c.Read(context.Background())
	return p, err
}

// WriteMessage sends data as a text message, which must be valid UTF-8. It
// is the tutorial's API; Write takes the type and a context.
func (c *Conn) WriteMessage(data []byte) error {
	return c.Write(context.Background(), TextMessage, data)
}

// Read waits for the next message, until ctx is done or the connection has
// ended and every message received before the end has been read. The
// returned slice belongs to the caller.
func (c *Conn) Read(ctx context.Context) (MessageType, []byte, error) {
	q := c.rq
	if q == nil {
		return 0, nil, fmt.Errorf("wsgate: read: %w", ErrEventMode)
	}
	done := c.Done()
	for {
		if m, ok := c.pop(); ok {
			return m.typ, m.data, nil
		}
		select {
		case <-q.notify:
		case <-done:
			if m, ok := c.pop(); ok {
				return m.typ, m.data, nil
			}
			return 0, nil, &closedErr{op: "read", cause: c.Err()}
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("wsgate: read: %w", ctx.Err())
		}
	}
}

// Write sends a message of type typ. Text must be valid UTF-8. p may be
// reused as soon as Write returns. Write fails with an error matching
// ErrClosed once the connection is closing; what happens when the send
// queue is full depends on Options.SendQueuePolicy. ctx only matters for
// PolicyBlock, which waits for room until ctx is done.
func (c *Conn) Write(ctx context.Context, typ MessageType, p []byte) error {
	switch typ {
	case TextMessage:
		if !utf8.Valid(p) {
			return fmt.Errorf("wsgate: write: %w", ErrInvalidUTF8)
		}
	case BinaryMessage:
	default:
		return fmt.Errorf("wsgate: write: invalid message type %d", int(typ))
	}
	n := len(p)
	if c.deflate != nil {
		buf := getBuffer()
		defer putBuffer(buf)
		*buf = c.deflate.compress((*buf)[:0], p)
		return c.writeData(ctx, byte(typ), true, *buf, n)
	}
	return c.writeData(ctx, byte(typ), false, p, n)
}

// writeData queues one data frame whose payload is p (size bytes before
// compression) and flushes.
func (c *Conn) writeData(ctx context.Context, op byte, rsv1 bool, p []byte, size int) error {
	return c.write(ctx, op, rsv1, p, nil, size)
}

// writeFrame queues an encoded, unmasked frame (server side only).
func (c *Conn) writeFrame(ctx context.Context, op byte, frame []byte, size int) error {
	return c.write(ctx, op, false, nil, frame, size)
}

// write queues one data message, given either as a payload p to encode or
// as a whole encoded frame, and flushes.
func (c *Conn) write(ctx context.Context, op byte, rsv1 bool, p, frame []byte, size int) error {
	c.mu.Lock()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if c.closeSent || c.closed {
			err := &closedErr{op: "write", cause: c.cause}
			c.mu.Unlock()
			return err
		}
		if c.qMsgs < c.cfg.SendQueueMessages && (c.qMsgs == 0 || c.qBytes+size <= c.cfg.SendQueueBytes) {
			break
		}
		switch c.cfg.SendQueuePolicy {
		case PolicyDropNewest:
			c.mu.Unlock()
			c.dropped.Add(1)
			return fmt.Errorf("wsgate: write: %w", ErrQueueFull)
		case PolicyDropOldest:
			if c.dropOldestLocked() {
				continue
			}
			// Everything queued is already going out: accept this one
			// over the bound rather than lose it.
		case PolicyBlock:
			ch := c.spaceChLocked()
			c.mu.Unlock()
			if timer == nil {
				timer = time.NewTimer(c.cfg.WriteTimeout)
			}
			select {
			case <-ch:
			case <-c.Done():
			case <-ctx.Done():
				return fmt.Errorf("wsgate: write: %w: %w", ErrQueueFull, ctx.Err())
			case <-timer.C:
				return fmt.Errorf("wsgate: write: %w: no room within %v", ErrQueueFull, c.cfg.WriteTimeout)
			}
			c.mu.Lock()
			continue
		default: // PolicyClose
			c.failLocked(StatusPolicyViolation, ErrSlowConsumer, "slow consumer")
			err := &closedErr{op: "write", cause: c.cause}
			c.mu.Unlock()
			return err
		}
		break
	}
	c.msgsOut.Add(1)
	c.bytesOut.Add(uint64(size))
	masked := !c.server
	if !masked && c.fd >= 0 && c.outOff == len(c.out) && !c.corked {
		// Nothing queued: write straight from p, no copy, no goroutine.
		var n, h int
		var err error
		if frame != nil {
			n, err = writev2(c.fd, frame, nil)
			h, p = 0, frame
		} else {
			h = putHeader(c.hdr[:], true, rsv1, op, len(p), false, 0)
			n, err = writev2(c.fd, c.hdr[:h], p)
		}
		total := h + len(p)
		if n == total {
			c.mu.Unlock()
			return nil
		}
		if err != nil {
			c.abortLocked(err)
			c.mu.Unlock()
			return nil // accepted; the end is reported by Err
		}
		// Keep what did not fit; the loop writes it when the socket drains.
		if n < h {
			c.out = append(c.out, c.hdr[n:h]...)
			c.out = append(c.out, p...)
		} else {
			c.out = append(c.out, p[n-h:]...)
		}
		c.qMsgs++
		c.qBytes += size
		c.marks = append(c.marks, qmark{end: len(c.out), size: size, op: op})
		c.lastProgress = nanotime()
		c.mu.Unlock()
		return nil
	}
	if frame != nil {
		c.appendEncodedLocked(op, frame, size)
	} else {
		c.appendFrameLocked(true, rsv1, op, p, size)
	}
	c.flushLocked(true)
	c.mu.Unlock()
	return nil
}

// appendFrameLocked encodes a frame at the end of out. size is the payload's
// size for accounting, -1 for control frames.
func (c *Conn) appendFrameLocked(fin, rsv1 bool, op byte, p []byte, size int) {
	if c.out == nil {
		c.out = getOut(len(p) + maxHeaderLen)
	}
	if c.outOff == len(c.out) {
		c.lastProgress = nanotime()
	}
	var key uint32
	masked := !c.server
	if masked {
		key = maskKey()
	}
	var hb [maxHeaderLen]byte
	h := putHeader(hb[:], fin, rsv1, op, len(p), masked, key)
	c.out = append(c.out, hb[:h]...)
	start := len(c.out)
	c.out = append(c.out, p...)
	if masked {
		maskBytes(key, 0, c.out[start:])
	}
	if size >= 0 {
		c.qMsgs++
		c.qBytes += size
	}
	c.marks = append(c.marks, qmark{end: len(c.out), size: size, op: op})
}

// appendEncodedLocked queues an encoded frame of a data message.
func (c *Conn) appendEncodedLocked(op byte, frame []byte, size int) {
	if c.out == nil {
		c.out = getOut(len(frame))
	}
	if c.outOff == len(c.out) {
		c.lastProgress = nanotime()
	}
	c.out = append(c.out, frame...)
	c.qMsgs++
	c.qBytes += size
	c.marks = append(c.marks, qmark{end: len(c.out), size: size, op: op})
}

// advanceLocked records that n more bytes of out were written.
func (c *Conn) advanceLocked(n int) {
	if n <= 0 {
		return
	}
	c.outOff += n
	c.lastProgress = nanotime()
	freed := false
	i := 0
	for ; i < len(c.marks) && c.marks[i].end <= c.outOff; i++ {
		m := c.marks[i]
		if m.size >= 0 {
			c.qMsgs--
			c.qBytes -= m.size
			freed = true
		} else if m.op == opClose {
			c.closeWritten = true
		}
	}
	if i > 0 {
		c.marks = c.marks[:copy(c.marks, c.marks[i:])]
	}
	if c.outOff == len(c.out) && c.inflight == 0 {
		putOut(c.out)
		c.out, c.outOff = nil, 0
		if cap(c.marks) > 64 {
			c.marks = nil
		}
	}
	if freed && c.spaceCh != nil {
		close(c.spaceCh)
		c.spaceCh = nil
	}
	if c.closeWritten && !c.closed {
		if c.closeRecv {
			c.handshakeDoneLocked()
		} else if c.failed && !c.halfClosed {
			c.halfCloseLocked()
		}
	}
}

// dropOldestLocked discards the oldest queued data message that has not
// started to go out. It reports false when there is none.
func (c *Conn) dropOldestLocked() bool {
	start := 0
	for i, m := range c.marks {
		if m.size >= 0 && start >= c.outOff && start >= c.inflight {
			n := m.end - start
			copy(c.out[start:], c.out[m.end:])
			c.out = c.out[:len(c.out)-n]
			for j := i + 1; j < len(c.marks); j++ {
				c.marks[j].end -= n
			}
			c.marks = append(c.marks[:i], c.marks[i+1:]...)
			c.qMsgs--
			c.qBytes -= m.size
			c.dropped.Add(1)
			return true
		}
		start = m.end
	}
	return false
}

func (c *Conn) spaceChLocked() chan struct{} {
	if c.spaceCh == nil {
		c.spaceCh = make(chan struct{})
	}
	return c.spaceCh
}

// sendControlLocked queues a control frame and flushes. mayBlock is false
// for callers that must never wait on the network (the sweeper).
func (c *Conn) sendControlLocked(op byte, payload []byte, mayBlock bool) {
	c.appendFrameLocked(true, false, op, payload, -1)
	c.flushLocked(mayBlock)
}

// flushLocked pushes queued bytes to the transport.
func (c *Conn) flushLocked(mayBlock bool) {
	if c.closed || c.corked || c.outOff == len(c.out) {
		return
	}
	if c.fd >= 0 {
		c.flushFDLocked()
		return
	}
	if c.writing {
		return // the goroutine writing now picks the new bytes up
	}
	if !mayBlock {
		c.writing = true
		go func() {
			c.mu.Lock()
			c.writing = false
			c.flushNetLocked()
			c.mu.Unlock()
		}()
		return
	}
	c.flushNetLocked()
}

// Close starts the closing handshake with 1000 (normal closure). See
// CloseWithStatus.
func (c *Conn) Close() error { return c.CloseWithStatus(StatusNormalClosure, "") }

// CloseWithStatus starts the closing handshake with code and reason and
// returns without waiting: messages queued before it are flushed first,
// then the close frame is sent, and the connection waits at most
// CloseTimeout for the peer's close frame. Wait on Done for the end.
// Calling it on a closing or closed connection does nothing and returns nil.
// code must be one that may be sent (1000–1003, 1007–1014, 3000–4999) and
// reason at most 123 bytes of UTF-8.
func (c *Conn) CloseWithStatus(code StatusCode, reason string) error {
	if !validWireCode(code) {
		return fmt.Errorf("wsgate: close: status %d may not be sent", int(code))
	}
	if len(reason) > maxControlLength-2 || !utf8.ValidString(reason) {
		return fmt.Errorf("wsgate: close: reason must be at most %d bytes of UTF-8", maxControlLength-2)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeSent || c.closed {
		return nil
	}
	if c.cause == nil {
		c.cause = &CloseError{Code: code, Reason: reason}
	}
	c.sendCloseLocked(code, reason, true)
	return nil
}

// CloseNow closes the TCP connection at once, without the closing
// handshake; queued messages are discarded. For dead or abusive peers.
func (c *Conn) CloseNow() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.abortLocked(errors.New("closed without handshake"))
	return nil
}

// sendCloseLocked queues the close frame and arms the handshake deadline.
func (c *Conn) sendCloseLocked(code StatusCode, reason string, mayBlock bool) {
	c.closeSent = true
	c.deadline = nanotime() + int64(c.cfg.CloseTimeout)
	var b [maxControlLength]byte
	n := 0
	if code != StatusNoStatusRcvd {
		binary.BigEndian.PutUint16(b[:], uint16(code))
		n = 2 + copy(b[2:], reason)
	}
	// advanceLocked completes the handshake once the frame is written.
	c.sendControlLocked(opClose, b[:n], mayBlock)
}

// failLocked fails the connection: the cause is recorded, a close frame
// with code follows whatever was queued, and input is discarded until the
// peer's close frame arrives.
func (c *Conn) failLocked(code StatusCode, err error, reason string) {
	if c.cause == nil {
		c.cause = &CloseError{Code: code, Reason: reason, Err: err}
	}
	if !c.closeSent && !c.closed {
		c.failed = true
		c.sendCloseLocked(code, reason, false)
	}
}

// lingerMax bounds how long a failed connection drains the peer's input
// after its close frame and FIN went out.
const lingerMax = time.Second

// halfCloseLocked runs once the close frame of a failed connection is
// written. RFC 6455 section 7.1.7 says not to wait for the peer's close
// frame then; closing at once could reset the connection while unread input
// is pending and destroy the close frame in flight, so the write side is
// shut down (the peer sees the close frame, then EOF) and input is drained
// until the peer closes too, for at most lingerMax.
func (c *Conn) halfCloseLocked() {
	c.halfClosed = true
	if c.fd >= 0 {
		shutdownWrite(c.fd)
	} else if cw, ok := c.nt.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.shutdownLocked()
		return
	}
	if d := nanotime() + int64(min(c.cfg.CloseTimeout, lingerMax)); d < c.deadline {
		c.deadline = d
	}
}

// handshakeDoneLocked runs when both close frames have been exchanged. The
// server closes TCP first (RFC 6455 section 7.1.1); a client gives it
// CloseTimeout to do so.
func (c *Conn) handshakeDoneLocked() {
	if c.server {
		c.shutdownLocked()
		return
	}
	c.deadline = nanotime() + int64(c.cfg.CloseTimeout)
}

// abortLocked ends the connection without a handshake because of err.
func (c *Conn) abortLocked(err error) {
	if c.cause == nil {
		c.cause = &CloseError{Code: StatusAbnormalClosure, Err: err}
	}
	c.shutdownLocked()
}

// shutdownLocked tears the transport down; finish runs when it is gone.
func (c *Conn) shutdownLocked() {
	if c.closed {
		return
	}
	c.closed = true
	if c.cause == nil {
		c.cause = &CloseError{Code: StatusAbnormalClosure, Err: io.ErrUnexpectedEOF}
	}
	if c.spaceCh != nil {
		close(c.spaceCh)
		c.spaceCh = nil
	}
	if c.fd >= 0 {
		c.loop.post(task{c: c, kind: taskClose})
		return
	}
	c.nt.nc.Close()
	select {
	case c.nt.resume <- struct{}{}:
	default:
	}
}

// finish runs once, on the goroutine that owned the transport, after it was
// closed.
func (c *Conn) finish() {
	c.mu.Lock()
	c.closed = true
	if c.inflight == 0 && c.out != nil {
		putOut(c.out)
	}
	c.out, c.outOff, c.marks = nil, 0, nil
	c.qMsgs, c.qBytes = 0, 0
	err := c.cause
	c.finished = true
	if c.done != nil {
		close(c.done)
	}
	c.mu.Unlock()
	c.rs.release()
	if c.cfg.OnClose != nil {
		c.cfg.OnClose(c, err)
	}
	defaultEngine.unregister(c)
}

// tick runs the connection's timers; the engine's sweeper calls it.
func (c *Conn) tick(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if c.closeSent || (c.closeRecv && !c.server) {
		if c.deadline != 0 && now > c.deadline {
			c.shutdownLocked()
		}
		return
	}
	if c.outOff < len(c.out) && now-c.lastProgress > int64(c.cfg.WriteTimeout) {
		c.abortLocked(fmt.Errorf("%w: no progress for %v", ErrWriteTimeout, c.cfg.WriteTimeout))
		return
	}
	if !c.cfg.keepalive {
		return
	}
	last := c.lastRecv.Load()
	if c.rq != nil && c.rq.isPaused() {
		last = now // we are the slow side, not the peer
	}
	if c.pingAt != 0 && last >= c.pingAt {
		c.pingAt = 0
	}
	if c.pingAt != 0 && now-c.pingAt > int64(c.cfg.PingTimeout) {
		c.abortLocked(fmt.Errorf("%w: nothing received within %v of a ping", ErrPingTimeout, c.cfg.PingTimeout))
		return
	}
	if now-c.lastPing >= int64(c.cfg.PingInterval) {
		c.lastPing = now
		if c.pingAt == 0 {
			c.pingAt = now
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(now))
		c.sendControlLocked(opPing, b[:], false)
	}
}

// onPong measures the round trip when p answers one of our pings.
func (c *Conn) onPong(p []byte, now int64) {
	if len(p) != 8 {
		return
	}
	sent := int64(binary.BigEndian.Uint64(p))
	if sent > 0 && sent <= now && now-sent < int64(time.Hour) {
		c.rtt.Store(now - sent)
	}
}

// recvQueue holds received messages for Read in event-less mode.
type recvQueue struct {
	mu     sync.Mutex
	items  []inMsg
	head   int
	bytes  int
	paused bool
	notify chan struct{}
}

type inMsg struct {
	typ  MessageType
	data []byte
}

func (q *recvQueue) isPaused() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.paused
}

// push adds a message and reports whether reading must pause.
func (c *Conn) push(typ MessageType, data []byte) bool {
	q := c.rq
	q.mu.Lock()
	q.items = append(q.items, inMsg{typ, data})
	q.bytes += len(data)
	full := len(q.items)-q.head >= c.cfg.RecvQueueMessages || q.bytes >= c.cfg.RecvQueueBytes
	if full {
		q.paused = true
	}
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
	return full
}

func (c *Conn) pop() (inMsg, bool) {
	q := c.rq
	q.mu.Lock()
	if q.head == len(q.items) {
		q.mu.Unlock()
		return inMsg{}, false
	}
	m := q.items[q.head]
	q.items[q.head] = inMsg{}
	q.head++
	q.bytes -= len(m.data)
	more := q.head < len(q.items)
	if !more {
		q.items, q.head = q.items[:0], 0
		if cap(q.items) > 64 {
			q.items = nil
		}
	} else if q.head > 32 && q.head*2 > len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	resume := q.paused && len(q.items)-q.head < c.cfg.RecvQueueMessages && q.bytes < c.cfg.RecvQueueBytes
	if resume {
		q.paused = false
	}
	q.mu.Unlock()
	if more {
		select {
		case q.notify <- struct{}{}:
		default:
		}
	}
	if resume {
		c.resumeReading()
	}
	return m, true
}

// resumeReading restarts a reader that paused because the queue was full.
func (c *Conn) resumeReading() {
	if c.fd >= 0 {
		c.loop.post(task{c: c, kind: taskResume})
		return
	}
	select {
	case c.nt.resume <- struct{}{}:
	default:
	}
}
