package wsgate

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// How a connection ends. Every path goes through one of three entry
// points, all under c.mu:
//
//   - startCloseLocked queues our close frame (a Close by the application,
//     a reply to the peer's close, or a failure) and arms the handshake
//     deadline; the phase becomes closing and writes fail from then on.
//   - evictLocked ends a connection that must give its memory back now: its
//     unsent output is discarded, a close frame goes out if the socket takes
//     it, and the transport is torn down.
//   - shutdownLocked tears the transport down (phase down); abortLocked is
//     shutdownLocked with a cause.
//
// The transport's owner then calls finish (phase finished), which releases
// the buffers, closes Done and calls OnClose.

// Close starts the closing handshake with 1000 (normal closure). See
// CloseWithStatus.
func (c *Conn) Close() error { return c.CloseWithStatus(StatusNormalClosure, "") }

// CloseWithStatus starts the closing handshake with code and reason and
// returns without waiting, on every transport: messages queued before it
// are flushed first, then the close frame is sent, and the connection waits
// at most CloseTimeout for the peer's close frame. Wait on Done for the end.
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
	if c.phase != phaseOpen {
		return nil
	}
	if c.cause == nil {
		c.cause = &CloseError{Code: code, Reason: reason}
	}
	c.startCloseLocked(code, reason)
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

// startCloseLocked queues our close frame behind what is queued and arms
// the handshake deadline. It never blocks.
func (c *Conn) startCloseLocked(code StatusCode, reason string) {
	c.phase = phaseClosing
	c.deadline = nanotime() + int64(c.cfg.CloseTimeout)
	var b [maxControlLength]byte
	c.sendControlLocked(opClose, closePayload(b[:], code, reason), false)
	// advanceLocked completes the handshake once the frame is written.
}

// closePayload encodes a close frame's payload into b.
func closePayload(b []byte, code StatusCode, reason string) []byte {
	if code == StatusNoStatusRcvd {
		return b[:0]
	}
	binary.BigEndian.PutUint16(b, uint16(code))
	return b[:2+copy(b[2:], reason)]
}

// failLocked fails the connection: the cause is recorded, a close frame
// with code follows whatever was queued, and input is discarded until the
// peer's close frame arrives.
func (c *Conn) failLocked(code StatusCode, err error, reason string) {
	if c.cause == nil {
		c.cause = &CloseError{Code: code, Reason: reason, Err: err}
	}
	if c.phase == phaseOpen {
		c.failed = true
		c.startCloseLocked(code, reason)
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

// evictLocked ends the connection at once with code, reason and cause,
// for a peer that must not keep what it holds (a message that makes no
// progress, a share of the memory budget): unsent output is discarded, the
// close frame is written if the socket takes it without waiting, and the
// transport is torn down.
func (c *Conn) evictLocked(code StatusCode, reason string, cause error) {
	if c.cause == nil {
		c.cause = &CloseError{Code: code, Reason: reason, Err: cause}
	}
	if c.phase >= phaseDown {
		return
	}
	if c.phase == phaseOpen && c.fd >= 0 {
		// Keep only the frame that is partly written (its rest must go
		// before anything else can), then the close frame.
		c.lone = nil // not started: discarded with the rest
		if q := c.q; q != &noQueue {
			keep := q.outOff
			for _, m := range q.marks {
				if m.start < q.outOff {
					keep = m.end
				}
			}
			q.out = q.out[:keep]
			q.marks = q.marks[:0]
			q.qMsgs, q.qBytes = 0, 0
		}
		var b [maxControlLength]byte
		c.appendFrameLocked(true, false, opClose, closePayload(b[:], code, reason), -1, false)
		c.phase = phaseClosing
		c.flushFDLocked()
	}
	c.shutdownLocked()
}

// shutdownLocked tears the transport down; finish runs when it is gone.
func (c *Conn) shutdownLocked() {
	if c.phase >= phaseDown {
		return
	}
	c.phase = phaseDown
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
	closeNetConn(c.nt.nc)
	select {
	case c.nt.resume <- struct{}{}:
	default:
	}
}

// finish runs once, on the goroutine that owned the transport, after it was
// closed.
func (c *Conn) finish() {
	c.rs.release()
	c.mu.Lock()
	c.phase = phaseFinished
	c.lone = nil
	c.releaseQueueLocked() // unless a writer goroutine still writes from it
	c.outStuck = false
	err := c.cause
	c.budgetRelease() // before Done: whoever waits sees everything given back
	if c.done != nil {
		close(c.done)
	}
	if x := c.ext; x != nil {
		x.pings = nil
		if x.stream != nil {
			close(x.stream.free)
			x.stream = nil
		}
	}
	c.mu.Unlock()
	if c.cfg.OnClose != nil {
		c.callOnClose(err)
	}
	defaultEngine.unregister(c)
}

// callOnClose runs Options.OnClose; a panic there is recovered, since it
// runs on a goroutine that serves other connections too.
func (c *Conn) callOnClose(err error) {
	defer func() { recover() }()
	c.cfg.OnClose(c, err)
}

// tick runs the connection's timers; the engine's sweeper calls it.
func (c *Conn) tick(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase >= phaseDown {
		return
	}
	if c.phase == phaseClosing || (c.closeRecv && !c.server) {
		if c.deadline != 0 && now > c.deadline {
			c.shutdownLocked()
		}
		return
	}
	if c.q.outOff < len(c.q.out) && now-c.q.lastProgress > int64(c.cfg.WriteTimeout) {
		c.abortLocked(fmt.Errorf("%w: no progress for %v", ErrWriteTimeout, c.cfg.WriteTimeout))
		return
	}
	if start := c.msgStart.Load(); start != 0 && c.cfg.MessageTimeout > 0 && now-start > int64(c.cfg.MessageTimeout) {
		c.evictLocked(StatusPolicyViolation, "message too slow",
			fmt.Errorf("%w: a message took more than %v", ErrMessageTimeout, c.cfg.MessageTimeout))
		return
	}
	if !c.cfg.keepalive {
		return
	}
	last := c.lastRecv.Load()
	if c.outStuck || (c.rq != nil && c.rq.isPaused()) {
		last = now // we stopped reading: the peer's silence is ours
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

// pingWaiter is a Ping call waiting for its pong.
type pingWaiter struct {
	sent int64
	ch   chan time.Duration
}

// Ping sends a ping and waits for the peer's pong, until ctx is done or
// the connection ends. It returns the round-trip time. A pong that answers
// a later ping answers this one too (peers may answer only the latest).
func (c *Conn) Ping(ctx context.Context) (time.Duration, error) {
	c.mu.Lock()
	if c.phase != phaseOpen {
		err := &closedErr{op: "ping", cause: c.cause}
		c.mu.Unlock()
		return 0, err
	}
	sent := nanotime()
	w := pingWaiter{sent: sent, ch: make(chan time.Duration, 1)}
	x := c.extLocked()
	x.pings = append(x.pings, w)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(sent))
	c.sendControlLocked(opPing, b[:], false)
	c.mu.Unlock()
	done := c.Done()
	select {
	case d := <-w.ch:
		return d, nil
	case <-done:
		select {
		case d := <-w.ch:
			return d, nil
		default:
		}
		return 0, &closedErr{op: "ping", cause: c.Err()}
	case <-ctx.Done():
		c.mu.Lock()
		for i, p := range x.pings {
			if p.ch == w.ch {
				x.pings = append(x.pings[:i], x.pings[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		return 0, fmt.Errorf("wsgate: ping: %w", ctx.Err())
	}
}

// onPong measures the round trip when p answers one of our pings and wakes
// the Ping calls it answers.
func (c *Conn) onPong(p []byte, now int64) {
	if len(p) != 8 {
		return
	}
	sent := int64(binary.BigEndian.Uint64(p))
	if sent <= 0 || sent > now || now-sent >= int64(time.Hour) {
		return
	}
	c.rtt.Store(now - sent)
	c.mu.Lock()
	if x := c.ext; x != nil && len(x.pings) > 0 {
		kept := x.pings[:0]
		for _, w := range x.pings {
			if w.sent <= sent {
				w.ch <- time.Duration(now - w.sent)
			} else {
				kept = append(kept, w)
			}
		}
		clear(x.pings[len(kept):])
		x.pings = kept
	}
	c.mu.Unlock()
}
