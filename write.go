package wsgate

import (
	"context"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// compressMax is the largest message Write compresses. Compressing costs
// CPU on the writing goroutine, often an event loop shared with other
// connections, so larger messages go out uncompressed (permessage-deflate
// decides per message).
const compressMax = 1 << 20

// Write sends a message of type typ. Text must be valid UTF-8. p may be
// reused as soon as Write returns.
//
// Write returns nil once the message is written to the socket or queued
// behind earlier ones. It fails with an error matching ErrClosed once the
// connection is closing, or when the connection failed before the message
// could be written; what happens when the send queue is full depends on
// Options.SendQueuePolicy. ctx only matters when Write has to wait: for
// PolicyBlock, or while a Writer streams another message.
//
// On event-loop connections Write never blocks on the network. On
// connections served by a reader goroutine (TLS, Wrap, platforms without
// epoll) the writing goroutine writes to the socket itself and may block
// until the peer reads, at most WriteTimeout.
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
	if c.deflate != nil && n <= compressMax {
		buf := getBuffer()
		defer putBuffer(buf)
		*buf = c.deflate.compress((*buf)[:0], p)
		return c.write(ctx, byte(typ), true, *buf, nil, n)
	}
	return c.write(ctx, byte(typ), false, p, nil, n)
}

// writeFrame queues an encoded, unmasked frame (server side only).
func (c *Conn) writeFrame(ctx context.Context, op byte, frame []byte, size int) error {
	return c.write(ctx, op, false, nil, frame, size)
}

// write sends one data message, given either as a payload p to encode or
// as a whole encoded frame. size is the payload's size before compression.
func (c *Conn) write(ctx context.Context, op byte, rsv1 bool, p, frame []byte, size int) error {
	c.mu.Lock()
	if err := c.waitRoomLocked(ctx, size, nil); err != nil {
		return err // waitRoomLocked unlocked
	}
	c.msgsOut.Add(1)
	c.bytesOut.Add(uint64(size))
	if c.server && c.fd >= 0 && c.q.outOff == len(c.q.out) && (!c.corked || len(p)+len(frame) >= directWriteMin) {
		err := c.writeDirectLocked(op, rsv1, p, frame, size)
		c.mu.Unlock()
		c.budgetCheck()
		return err
	}
	if frame != nil {
		c.appendEncodedLocked(op, frame, size)
	} else {
		c.appendFrameLocked(true, rsv1, op, p, size, false)
	}
	pending := len(c.q.out) - c.q.outOff
	n, err := c.flushLocked(true)
	if err != nil && n < pending {
		err = &closedErr{op: "write", cause: c.cause}
	} else {
		err = nil
	}
	c.mu.Unlock()
	c.budgetCheck()
	return err
}

// directWriteMin is the size from which a message is written straight
// from the caller's buffer even while the loop corks the connection: a
// frame that large costs a system call of its own anyway, and copying it
// into the queue first would only take a large buffer for nothing.
const directWriteMin = 16 << 10

// writeDirectLocked writes a message straight from the caller's buffer
// when nothing is queued: no copy, no goroutine. What the socket does not
// take is queued and goes out when the loop sees the socket drain.
func (c *Conn) writeDirectLocked(op byte, rsv1 bool, p, frame []byte, size int) error {
	var n, h int
	var err error
	if frame != nil {
		n, err = writev2(c.fd, frame, nil)
		p = frame
	} else {
		h = putHeader(c.hdr[:], true, rsv1, op, len(p), false, 0)
		n, err = writev2(c.fd, c.hdr[:h], p)
	}
	if n == h+len(p) {
		return nil
	}
	if err != nil {
		c.abortLocked(err)
		return &closedErr{op: "write", cause: c.cause}
	}
	c.growOutLocked(h + len(p) - n)
	c.q.lastProgress = nanotime()
	start := len(c.q.out)
	if n < h {
		c.q.out = append(c.q.out, c.hdr[n:h]...)
		c.q.out = append(c.q.out, p...)
	} else {
		c.q.out = append(c.q.out, p[n-h:]...)
	}
	c.q.qMsgs++
	c.q.qBytes += size
	// The frame's start lies before out: it is partly written.
	c.addMarkLocked(qmark{start: start - n, end: len(c.q.out), size: size, op: op})
	c.outBacklogLocked()
	return nil
}

// waitRoomLocked waits until a data frame of size bytes may be queued,
// applying the send queue policy. owner is the streaming writer the frame
// belongs to, nil for a whole message. On error it returns with c.mu
// unlocked; on success c.mu is still held.
func (c *Conn) waitRoomLocked(ctx context.Context, size int, owner *messageWriter) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	wait := func(ch <-chan struct{}) error {
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
		return nil
	}
	c.materializeLoneLocked() // counted like any queued message from here on
	for {
		if c.phase != phaseOpen {
			err := &closedErr{op: "write", cause: c.cause}
			c.mu.Unlock()
			return err
		}
		if x := c.ext; x != nil && x.stream != nil && x.stream.w != owner {
			// Another goroutine streams a message: frames of two messages
			// must not interleave.
			if err := wait(x.stream.free); err != nil {
				return err
			}
			continue
		}
		if c.q.qMsgs < c.cfg.SendQueueMessages && (c.q.qMsgs == 0 || c.q.qBytes+size <= c.cfg.SendQueueBytes) {
			return nil
		}
		policy := c.cfg.SendQueuePolicy
		if owner != nil && policy != PolicyClose {
			// Part of a message is out already: it cannot be dropped, so a
			// stream waits for room.
			policy = PolicyBlock
		}
		switch policy {
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
			return nil
		case PolicyBlock:
			if err := wait(c.spaceChLocked()); err != nil {
				return err
			}
		default: // PolicyClose
			c.failLocked(c.cfg.slowStatus, ErrSlowConsumer, c.cfg.slowReason)
			err := &closedErr{op: "write", cause: c.cause}
			c.mu.Unlock()
			return err
		}
	}
}

// growOutLocked makes room for n more bytes in out, charging the budget
// for what it allocates.
func (c *Conn) growOutLocked(n int) {
	if c.q == &noQueue {
		c.q = queuePool.Get().(*sendQueue)
	}
	if len(c.q.out)+n <= cap(c.q.out) {
		return
	}
	if c.q.outOff > 0 && c.q.inflight == 0 {
		// Reuse the space of what was written.
		k := copy(c.q.out, c.q.out[c.q.outOff:])
		c.q.out = c.q.out[:k]
		for i := range c.q.marks {
			c.q.marks[i].start -= c.q.outOff // negative for a frame partly written
			c.q.marks[i].end -= c.q.outOff
		}
		c.q.outOff = 0
		if len(c.q.out)+n <= cap(c.q.out) {
			return
		}
	}
	old := c.q.out
	need := len(old) + n
	// Doubling, but not far past what the queue may hold: a slow peer's
	// buffer stays near its bound.
	nb := getOut(max(need, min(2*cap(old), c.cfg.SendQueueBytes+64<<10)))
	nb = nb[:len(old)]
	copy(nb, old)
	if c.q.inflight == 0 {
		putOut(old)
	}
	// A reader goroutine may still be writing from old: it only reads it,
	// and advanceLocked works on offsets, which stay valid in nb.
	c.q.out = nb
	c.charge(int64(cap(nb) - cap(old)))
}

// appendFrameLocked encodes a frame at the end of out. size is the payload's
// size for accounting, -1 for control frames.
func (c *Conn) appendFrameLocked(fin, rsv1 bool, op byte, p []byte, size int, frag bool) {
	c.materializeLoneLocked()
	if fin && !rsv1 && !frag && size >= 0 && c.tryJoinLocked(op, p, size) {
		return
	}
	var key uint32
	masked := !c.server
	if masked {
		key = maskKey()
	}
	var hb [maxHeaderLen]byte
	h := putHeader(hb[:], fin, rsv1, op, len(p), masked, key)
	c.growOutLocked(h + len(p))
	if c.q.outOff == len(c.q.out) {
		c.q.lastProgress = nanotime()
	}
	start := len(c.q.out)
	c.q.out = append(c.q.out, hb[:h]...)
	c.q.out = append(c.q.out, p...)
	if masked {
		maskBytes(key, 0, c.q.out[start+h:])
	}
	if size >= 0 {
		c.q.qMsgs++
		c.q.qBytes += size
	}
	c.addMarkLocked(qmark{start: start, end: len(c.q.out), size: size, op: op, frag: frag})
	c.outBacklogLocked()
}

// appendEncodedLocked queues an encoded frame of a data message.
func (c *Conn) appendEncodedLocked(op byte, frame []byte, size int) {
	c.materializeLoneLocked()
	if frame[0]&rsv1Bit == 0 {
		if h := headerLen(frame[0], frame[1]); c.tryJoinLocked(op, frame[h:], size) {
			return
		}
	}
	c.growOutLocked(len(frame))
	if c.q.outOff == len(c.q.out) {
		c.q.lastProgress = nanotime()
	}
	start := len(c.q.out)
	c.q.out = append(c.q.out, frame...)
	c.q.qMsgs++
	c.q.qBytes += size
	c.addMarkLocked(qmark{start: start, end: len(c.q.out), size: size, op: op})
	c.outBacklogLocked()
}

// Bounds of a joined frame (Options.JoinSeparator).
const (
	maxJoined    = 63 // messages beyond the first
	maxJoinBytes = 32 << 10
)

// tryJoinLocked appends the payload p of a data message to the last queued
// frame when the connection allows joining (Options.JoinSeparator), that
// frame is a whole message of the same type that has not started to go out,
// and the result stays within the bounds. It reports whether it did.
func (c *Conn) tryJoinLocked(op byte, p []byte, size int) bool {
	sep := c.cfg.joinSep
	if sep == nil || !c.server || c.deflate != nil || len(c.q.marks) == 0 {
		return false
	}
	m := &c.q.marks[len(c.q.marks)-1]
	if m.op != op || m.frag || m.size < 0 || m.joined >= maxJoined || m.start < c.q.outOff || m.start < c.q.inflight {
		return false
	}
	h := headerLen(c.q.out[m.start], c.q.out[m.start+1])
	oldLen := m.end - m.start - h
	newLen := oldLen + len(sep) + len(p)
	if newLen > maxJoinBytes {
		return false
	}
	var hb [maxHeaderLen]byte
	nh := putHeader(hb[:], true, false, op, newLen, false, 0)
	c.growOutLocked(nh - h + len(sep) + len(p))
	m = &c.q.marks[len(c.q.marks)-1] // growing may have moved the buffer's contents
	start := m.start
	if nh != h {
		c.q.out = c.q.out[:len(c.q.out)+nh-h]
		copy(c.q.out[start+nh:], c.q.out[start+h:start+h+oldLen])
	}
	copy(c.q.out[start:], hb[:nh])
	c.q.out = append(c.q.out, sep...)
	c.q.out = append(c.q.out, p...)
	m.end = len(c.q.out)
	m.size += size
	m.joined++
	c.q.qBytes += size
	c.outBacklogLocked()
	return true
}

// Enqueue queues pm behind what is queued and returns without writing it:
// the connection writes it soon after (its event loop, or a writer
// goroutine on other transports), together with whatever else was queued
// meanwhile. A broadcast that enqueues each of a burst of messages to many
// connections therefore costs one system call per connection for the
// burst, where WritePrepared costs one per message; with JoinSeparator set,
// the burst also goes out in fewer frames. When nothing else is queued,
// the connection keeps pm itself rather than a copy of its frame, so pm's
// frame must not change (PreparedMessage never does). The queue policy
// applies as for Write; ctx only matters for PolicyBlock.
func (c *Conn) Enqueue(ctx context.Context, pm *PreparedMessage) error {
	if !c.server {
		return c.WritePrepared(ctx, pm)
	}
	frame := pm.frameFor(c.deflate) // built (compressed) here, outside the lock
	size := len(pm.data)
	c.mu.Lock()
	if err := c.waitRoomLocked(ctx, size, nil); err != nil {
		return err // waitRoomLocked unlocked
	}
	c.msgsOut.Add(1)
	c.bytesOut.Add(uint64(size))
	if c.fd >= 0 && !c.corked && c.q == &noQueue && c.lone == nil {
		// Nothing else is queued: keep pm itself rather than a copy of
		// its frame. A broadcast to many idle subscribers then takes no
		// queue and copies nothing per subscriber; the loop writes the
		// shared frame. Anything queued after it makes it an ordinary
		// queued frame first (materializeLoneLocked), so order and the
		// queue's accounting stay as they were.
		c.lone = pm
		c.flushSoonLocked()
		c.mu.Unlock()
		return nil
	}
	c.appendEncodedLocked(byte(pm.typ), frame, size)
	c.flushSoonLocked()
	c.mu.Unlock()
	c.budgetCheck()
	return nil
}

// materializeLoneLocked turns the message Enqueue kept by reference into
// an ordinary queued frame, before anything else is queued, counted or
// removed.
func (c *Conn) materializeLoneLocked() {
	pm := c.lone
	if pm == nil {
		return
	}
	c.lone = nil
	c.appendEncodedLocked(byte(pm.typ), pm.frameFor(c.deflate), len(pm.data))
}

// flushSoonLocked arranges for the queue to be written without writing it
// now: a flush task for the event loop (one at a time), or a writer
// goroutine on the net.Conn transport. A corked connection is flushed when
// its loop uncorks it.
func (c *Conn) flushSoonLocked() {
	if c.phase >= phaseDown || c.corked || (c.q.outOff == len(c.q.out) && c.lone == nil) {
		return
	}
	if c.fd < 0 {
		c.flushLocked(false)
		return
	}
	if !c.flushPosted {
		c.flushPosted = true
		c.loop.post(task{c: c, kind: taskFlush})
	}
}

// outPauseBytes is how much unsent output makes an event loop stop reading
// a server connection: a client that does not read what it provokes
// (echoes, pongs, replies) is not read either, so its output stays
// bounded. Clients keep reading whatever they write: if both ends of a
// connection stopped reading while their output was stuck, each would wait
// for the other forever.
//
// The mark is half the send queue (at most 256 KiB): one read's worth of
// replies on top of it must still fit the queue, or the peer would be
// closed as a slow consumer instead of slowed down.
func (c *Conn) outPauseBytes() int { return min(c.cfg.SendQueueBytes/2, 256<<10) }

// outBacklogLocked notes when a server connection's unsent output crosses
// the pause mark.
func (c *Conn) outBacklogLocked() {
	if c.server && !c.outStuck && len(c.q.out)-c.q.outOff >= c.outPauseBytes() {
		c.outStuck = true
	}
}

// advanceLocked records that n more bytes of out were written.
func (c *Conn) advanceLocked(n int) {
	if n <= 0 {
		return
	}
	c.q.outOff += n
	c.q.lastProgress = nanotime()
	freed := false
	i := 0
	for ; i < len(c.q.marks) && c.q.marks[i].end <= c.q.outOff; i++ {
		m := c.q.marks[i]
		if m.size >= 0 {
			c.q.qMsgs--
			c.q.qBytes -= m.size
			freed = true
		} else if m.op == opClose {
			c.closeWritten = true
		}
	}
	if i > 0 {
		c.q.marks = c.q.marks[:copy(c.q.marks, c.q.marks[i:])]
	}
	if c.q.outOff == len(c.q.out) && c.q.inflight == 0 {
		c.releaseQueueLocked()
	}
	if c.outStuck && len(c.q.out)-c.q.outOff < c.outPauseBytes()/2 {
		c.outStuck = false
		if c.fd >= 0 && c.phase < phaseDown {
			c.loop.post(task{c: c, kind: taskResume})
		}
	}
	if freed && c.spaceCh != nil {
		close(c.spaceCh)
		c.spaceCh = nil
	}
	if c.closeWritten && c.phase < phaseDown {
		if c.closeRecv {
			c.handshakeDoneLocked()
		} else if c.failed && !c.halfClosed {
			c.halfCloseLocked()
		}
	}
}

// marksPool holds the usual size of a queue's marks, as array pointers (a
// Put allocates nothing). An idle connection holds none.
var marksPool sync.Pool // *[marksSize]qmark

const marksSize = 64

// addMarkLocked records a queued frame; out was grown first, so the queue
// exists.
func (c *Conn) addMarkLocked(m qmark) {
	q := c.q
	if q.marks == nil {
		if p, ok := marksPool.Get().(*[marksSize]qmark); ok {
			q.marks = p[:0]
		} else {
			q.marks = new([marksSize]qmark)[:0]
		}
	}
	q.marks = append(q.marks, m)
}

// releaseQueueLocked gives a drained (or abandoned) queue back with its
// buffer and marks, unless a writer goroutine still writes from it.
func (c *Conn) releaseQueueLocked() {
	q := c.q
	if q == &noQueue || q.inflight != 0 {
		return
	}
	if q.out != nil {
		c.charge(-int64(cap(q.out)))
		putOut(q.out)
	}
	if cap(q.marks) == marksSize {
		marksPool.Put((*[marksSize]qmark)(q.marks[:marksSize]))
	}
	*q = sendQueue{}
	queuePool.Put(q)
	c.q = &noQueue
}

// removeUnsentLocked removes the first (oldest) or last queued frame that
// matches and has not started to go out. It reports whether it removed one.
func (c *Conn) removeUnsentLocked(match func(qmark) bool, last bool) bool {
	c.materializeLoneLocked()
	found := -1
	for i, m := range c.q.marks {
		if m.start >= c.q.outOff && m.start >= c.q.inflight && match(m) {
			found = i
			if !last {
				break
			}
		}
	}
	if found < 0 {
		return false
	}
	m := c.q.marks[found]
	n := m.end - m.start
	copy(c.q.out[m.start:], c.q.out[m.end:])
	c.q.out = c.q.out[:len(c.q.out)-n]
	for j := found + 1; j < len(c.q.marks); j++ {
		c.q.marks[j].start -= n
		c.q.marks[j].end -= n
	}
	c.q.marks = append(c.q.marks[:found], c.q.marks[found+1:]...)
	if m.size >= 0 {
		c.q.qMsgs--
		c.q.qBytes -= m.size
	}
	return true
}

// dropOldestLocked discards the oldest queued whole data message that has
// not started to go out. It reports false when there is none.
func (c *Conn) dropOldestLocked() bool {
	if c.removeUnsentLocked(func(m qmark) bool { return m.size >= 0 && !m.frag }, false) {
		c.dropped.Add(1)
		return true
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
// for callers that must never wait on the network.
func (c *Conn) sendControlLocked(op byte, payload []byte, mayBlock bool) {
	c.appendFrameLocked(true, false, op, payload, -1, false)
	c.flushLocked(mayBlock)
}

// sendPongLocked answers a ping. While the output is stuck, only the most
// recent ping gets an answer (RFC 6455 section 5.5.3 allows it): a pong
// still waiting in the queue is replaced, so a peer that floods pings
// without reading costs one pong.
func (c *Conn) sendPongLocked(payload []byte, mayBlock bool) {
	if c.outStuck {
		c.removeUnsentLocked(func(m qmark) bool { return m.op == opPong }, true)
	}
	c.sendControlLocked(opPong, payload, mayBlock)
}

// flushLocked pushes queued bytes to the transport. It returns how many
// bytes it wrote and the error that stopped it, if any; writing that
// continues elsewhere (on the loop when the socket drains, or on another
// goroutine) is not counted.
func (c *Conn) flushLocked(mayBlock bool) (int, error) {
	if c.phase >= phaseDown || c.corked || (c.q.outOff == len(c.q.out) && c.lone == nil) {
		return 0, nil
	}
	if c.fd >= 0 {
		return c.flushFDLocked()
	}
	if c.writing {
		return 0, nil // the goroutine writing now picks the new bytes up
	}
	if !mayBlock {
		c.writing = true
		go func() {
			c.mu.Lock()
			c.writing = false
			c.flushNetLocked()
			c.mu.Unlock()
		}()
		return 0, nil
	}
	return c.flushNetLocked()
}
