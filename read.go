package wsgate

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// readState is the incremental frame parser. Only the goroutine that reads
// the connection (its event loop, or its reader goroutine) touches it.
type readState struct {
	hdr  [maxHeaderLen]byte
	hdrN uint8

	// The frame being read.
	inFrame bool
	fin     bool
	op      byte
	masked  bool
	keyPos  uint8
	key     uint32

	// The data message being assembled.
	msgOp      byte // opText or opBinary; 0 between messages
	msgDeflate bool
	utf8       utf8Validator

	discard bool // failed: parse frames, act only on close
	stopped bool // the peer's close arrived: ignore all input
	paused  bool // the receive queue is full or a message is inflating: keep input in rx.stash

	progress  int32 // payload bytes since the last sign of life counted
	remain    int64
	frameLen  int64
	msgSize   int64
	msg       []byte
	inflating *inflater // a compressed message being inflated, step by step
	rx        *readExt  // rarely needed state, made on demand
}

// readExt holds what the parser rarely needs, so that idle connections do
// not carry it.
type readExt struct {
	ctrl  []byte // a control frame's payload split across reads
	stash []byte // input not yet parsed while paused
}

// ext returns the parser's extension, making it on first use.
func (rs *readState) ext() *readExt {
	if rs.rx == nil {
		rs.rx = &readExt{}
	}
	return rs.rx
}

// dropExt lets the extension go once it holds nothing.
func (rs *readState) dropExt() {
	if x := rs.rx; x != nil && x.ctrl == nil && x.stash == nil {
		rs.rx = nil
	}
}

// progressMark is how many payload bytes count as a sign of life when no
// frame begins: a peer sending one big frame stays alive at a reasonable
// rate, one dripping a byte at a time does not.
const progressMark = 64 << 10

// inflateStep bounds how many bytes an event loop inflates for one
// connection before it serves the others.
const inflateStep = 256 << 10

func (rs *readState) release() {
	if rs.inflating != nil {
		rs.inflating.discard()
		rs.inflating = nil
	}
	rs.msg = nil
	rs.rx = nil
}

// feed parses input. It runs on the reading goroutine and may call
// OnMessage.
func (c *Conn) feed(p []byte, now int64) {
	rs := &c.rs
	for len(p) > 0 && !rs.stopped && !rs.paused {
		if !rs.inFrame {
			var h []byte
			if rs.hdrN == 0 && len(p) >= 2 {
				if hl := headerLen(p[0], p[1]); len(p) >= hl {
					h, p = p[:hl], p[hl:]
				}
			}
			if h == nil {
				if rs.hdrN < 2 {
					k := copy(rs.hdr[rs.hdrN:2], p)
					rs.hdrN += uint8(k)
					p = p[k:]
					if rs.hdrN < 2 {
						return
					}
				}
				hl := headerLen(rs.hdr[0], rs.hdr[1])
				k := copy(rs.hdr[rs.hdrN:hl], p)
				rs.hdrN += uint8(k)
				p = p[k:]
				if int(rs.hdrN) < hl {
					return
				}
				h = rs.hdr[:hl]
				rs.hdrN = 0
			}
			if !c.beginFrame(h, now) {
				return // the rest of the input is ignored
			}
			if rs.remain == 0 {
				rs.inFrame = false
				c.payload(nil, now)
			}
			continue
		}
		n := len(p)
		if int64(n) > rs.remain {
			n = int(rs.remain)
		}
		chunk := p[:n]
		p = p[n:]
		if rs.masked {
			rs.keyPos = uint8(maskBytes(rs.key, int(rs.keyPos), chunk))
		}
		rs.remain -= int64(n)
		if rs.remain == 0 {
			rs.inFrame = false
		}
		if rs.progress += int32(n); rs.progress >= progressMark {
			rs.progress = 0
			c.lastRecv.Store(now)
		}
		c.payload(chunk, now)
	}
	// Keep what was not parsed (p may itself be the stash: append copies
	// with memmove semantics).
	if rs.paused {
		x := rs.ext()
		old := cap(x.stash)
		x.stash = append(x.stash[:0], p...)
		c.charge(int64(cap(x.stash) - old))
	} else if x := rs.rx; x != nil {
		x.stash = x.stash[:0]
	}
}

// tryResume continues parsing after a pause: it finishes an inflation and
// parses the input kept meanwhile. It reports whether the socket may be
// read again.
func (c *Conn) tryResume(now int64) bool {
	rs := &c.rs
	if !rs.paused {
		return true
	}
	if rs.inflating != nil {
		if !c.continueInflate() || rs.paused {
			return false
		}
	} else if c.rq != nil && c.rq.isPaused() {
		return false
	}
	rs.paused = false
	if x := rs.rx; x != nil && len(x.stash) > 0 {
		c.feed(x.stash, now)
		if rs.paused {
			return false
		}
	}
	if x := rs.rx; x != nil && cap(x.stash) > 0 {
		c.charge(-int64(cap(x.stash)))
		x.stash = nil
		rs.dropExt()
	}
	return true
}

// beginFrame validates a frame header and sets up reading its payload.
// Every frame that begins is a sign of life: keepalive counts frames, not
// bytes.
func (c *Conn) beginFrame(h []byte, now int64) bool {
	rs := &c.rs
	c.lastRecv.Store(now)
	rs.progress = 0
	b0, b1 := h[0], h[1]
	fin := b0&finBit != 0
	rsv1 := b0&rsv1Bit != 0
	op := b0 & 0x0F
	masked := b1&maskBit != 0
	var n int64
	switch b1 & 0x7F {
	case 126:
		n = int64(binary.BigEndian.Uint16(h[2:]))
	case 127:
		u := binary.BigEndian.Uint64(h[2:])
		if u>>63 != 0 {
			// The stream cannot be parsed further: send the close frame
			// and ignore the rest of the input.
			c.fail(StatusProtocolError, "invalid payload length")
			rs.stopped = true
			return false
		}
		n = int64(u)
	default:
		n = int64(b1 & 0x7F)
	}
	rs.inFrame = true
	rs.fin, rs.op, rs.masked = fin, op, masked
	rs.remain, rs.frameLen = n, n
	rs.keyPos = 0
	if masked {
		rs.key = binary.LittleEndian.Uint32(h[len(h)-4:])
	}
	isControl := op&0x8 != 0
	if isControl {
		if x := rs.rx; x != nil {
			x.ctrl = x.ctrl[:0]
		}
		if !fin || n > maxControlLength {
			if rs.discard {
				c.shutdown()
				return false
			}
			return c.ignoreFrame(StatusProtocolError, "invalid control frame")
		}
	}
	if rs.discard {
		return true
	}
	if b0&(rsv2Bit|rsv3Bit) != 0 {
		return c.ignoreFrame(StatusProtocolError, "reserved bits set")
	}
	if masked != c.server {
		if c.server {
			return c.ignoreFrame(StatusProtocolError, "unmasked client frame")
		}
		return c.ignoreFrame(StatusProtocolError, "masked server frame")
	}
	if isControl {
		if rsv1 {
			return c.ignoreFrame(StatusProtocolError, "RSV1 on a control frame")
		}
		if op != opClose && op != opPing && op != opPong {
			return c.ignoreFrame(StatusProtocolError, "reserved opcode")
		}
		return true
	}
	switch op {
	case opContinuation:
		if rs.msgOp == 0 {
			return c.ignoreFrame(StatusProtocolError, "continuation frame without a message")
		}
		if rsv1 {
			return c.ignoreFrame(StatusProtocolError, "RSV1 on a continuation frame")
		}
	case opText, opBinary:
		if rs.msgOp != 0 {
			return c.ignoreFrame(StatusProtocolError, "new message before the last one ended")
		}
		if rsv1 && c.deflate == nil {
			return c.ignoreFrame(StatusProtocolError, "RSV1 set without an extension")
		}
		rs.msgOp, rs.msgDeflate, rs.msgSize = op, rsv1, 0
		rs.utf8.reset()
		c.msgStart.Store(now)
	default:
		return c.ignoreFrame(StatusProtocolError, "reserved opcode")
	}
	rs.msgSize += n
	if lim := c.readLimit.Load(); lim >= 0 && rs.msgSize > lim {
		return c.ignoreFrame(StatusMessageTooBig, "message too big")
	}
	return true
}

// opIgnore marks a frame whose payload is skipped after a failure.
const opIgnore = 0xFF

// ignoreFrame fails the connection and skips the current frame's payload;
// parsing goes on, so that the peer's close frame can still be read.
func (c *Conn) ignoreFrame(code StatusCode, reason string) bool {
	c.fail(code, reason)
	c.rs.op = opIgnore
	return true
}

// payload handles a chunk of the current frame's unmasked payload. The
// frame is complete when rs.inFrame is false.
func (c *Conn) payload(chunk []byte, now int64) {
	rs := &c.rs
	done := !rs.inFrame
	if rs.op == opIgnore {
		return
	}
	if rs.op&0x8 != 0 {
		if done && (rs.rx == nil || len(rs.rx.ctrl) == 0) {
			c.control(chunk, now) // the whole payload is here
			return
		}
		x := rs.ext()
		if x.ctrl == nil {
			x.ctrl = make([]byte, 0, maxControlLength)
		}
		x.ctrl = append(x.ctrl, chunk...)
		if done {
			c.control(x.ctrl, now)
			x.ctrl = nil
			rs.dropExt()
		}
		return
	}
	if rs.discard {
		return
	}
	text := rs.msgOp == opText && !rs.msgDeflate
	if text && !rs.utf8.write(chunk) {
		c.fail(StatusInvalidFramePayloadData, "invalid UTF-8")
		return
	}
	if done && rs.fin && len(rs.msg) == 0 && int64(len(chunk)) == rs.frameLen && !rs.msgDeflate {
		// The whole message is in this chunk: deliver it in place.
		if text && !rs.utf8.complete() {
			c.fail(StatusInvalidFramePayloadData, "invalid UTF-8")
			return
		}
		op := rs.msgOp
		rs.msgOp = 0
		c.msgStart.Store(0)
		c.deliver(MessageType(op), chunk, false)
		return
	}
	c.appendMsg(chunk)
	if !done || !rs.fin {
		return
	}
	op := rs.msgOp
	rs.msgOp = 0
	c.msgStart.Store(0)
	msg := rs.msg
	if rs.msgDeflate {
		rs.inflating = c.deflate.startInflate(msg, op, c.readLimit.Load())
		c.continueInflate()
		return
	}
	if text && !rs.utf8.complete() {
		c.fail(StatusInvalidFramePayloadData, "invalid UTF-8")
		return
	}
	if c.rq != nil {
		// The queue takes the message over, in a buffer of its size.
		out := msg
		if cap(msg) > 2*len(msg) {
			out = append([]byte(nil), msg...)
		} else {
			rs.msg = nil
			c.charge(-int64(cap(msg)))
		}
		c.releaseMsg()
		c.deliver(MessageType(op), out, true)
		return
	}
	c.deliver(MessageType(op), msg, false)
	c.releaseMsg()
}

// appendMsg adds p to the message being reassembled, growing its buffer
// from the pools.
func (c *Conn) appendMsg(p []byte) {
	rs := &c.rs
	if need := len(rs.msg) + len(p); need > cap(rs.msg) {
		nb := getOut(max(need, 2*cap(rs.msg)))
		nb = append(nb, rs.msg...)
		c.charge(int64(cap(nb) - cap(rs.msg)))
		putOut(rs.msg)
		rs.msg = nb
	}
	rs.msg = append(rs.msg, p...)
}

// releaseMsg gives the reassembly buffer back once its message is
// delivered: a connection that reassembled a message once does not keep a
// buffer for the rest of its life.
func (c *Conn) releaseMsg() {
	rs := &c.rs
	if rs.msg == nil {
		return
	}
	c.charge(-int64(cap(rs.msg)))
	putOut(rs.msg)
	rs.msg = nil
}

// continueInflate inflates more of the current compressed message: at most
// inflateStep bytes on an event loop, where other connections wait their
// turn, and all of it on a reader goroutine. It delivers the message when
// it is complete, and otherwise pauses parsing until the loop comes back.
// It reports whether the message is done.
func (c *Conn) continueInflate() bool {
	rs := &c.rs
	in := rs.inflating
	step := -1
	if c.fd >= 0 {
		step = inflateStep
	}
	done, err := in.step(c, step)
	if !done {
		rs.paused = true
		return false
	}
	rs.inflating = nil
	rs.paused = false
	out, op := in.out, in.op
	in.close()
	c.charge(-int64(cap(out)))
	c.releaseMsg()
	if err != nil {
		putOut(out)
		if err == errInflateTooBig {
			c.failTooBig()
		} else {
			c.fail(StatusInvalidFramePayloadData, "invalid compressed data")
		}
		return true
	}
	if op == opText && !utf8.Valid(out) {
		putOut(out)
		c.fail(StatusInvalidFramePayloadData, "invalid UTF-8")
		return true
	}
	c.deflate.remember(c, out)
	// A pooled buffer goes back once OnMessage returns (the receive queue
	// gets a copy of the message's size); a larger one is the message's.
	pooled := isPooledOut(out)
	c.deliver(MessageType(op), out, !pooled)
	if pooled {
		putOut(out)
	}
	return true
}

// deliver hands a complete message to OnMessage or the receive queue. owned
// says whether data may be kept without copying.
func (c *Conn) deliver(typ MessageType, data []byte, owned bool) {
	c.msgsIn.Add(1)
	c.bytesIn.Add(uint64(len(data)))
	if c.rq == nil {
		c.callOnMessage(typ, data)
		return
	}
	if !owned {
		data = append([]byte(nil), data...)
	}
	if c.push(typ, data) {
		c.rs.paused = true
	}
}

// callOnMessage runs the application's handler. A panic there would take
// down an event loop serving many connections, so it is recovered: the
// connection fails with 1011 and Err reports the panic.
func (c *Conn) callOnMessage(typ MessageType, data []byte) {
	defer func() {
		if r := recover(); r != nil {
			c.handlerPanicked("OnMessage", r)
		}
	}()
	c.cfg.OnMessage(c, typ, data)
}

// control handles a complete control frame.
func (c *Conn) control(p []byte, now int64) {
	rs := &c.rs
	switch rs.op {
	case opPing:
		if rs.discard {
			return
		}
		c.mu.Lock()
		if c.phase == phaseOpen {
			c.sendPongLocked(p, true)
		}
		c.mu.Unlock()
	case opPong:
		c.onPong(p, now)
	case opClose:
		c.onClose(p)
	}
}

// onClose handles the peer's close frame.
func (c *Conn) onClose(p []byte) {
	rs := &c.rs
	code := StatusNoStatusRcvd
	reason := ""
	if !rs.discard {
		switch {
		case len(p) == 1:
			c.fail(StatusProtocolError, "close frame payload of 1 byte")
			return
		case len(p) >= 2:
			code = StatusCode(binary.BigEndian.Uint16(p))
			if !validWireCode(code) {
				c.fail(StatusProtocolError, "invalid close code "+strconv.Itoa(int(code)))
				return
			}
			if !utf8.Valid(p[2:]) {
				c.fail(StatusInvalidFramePayloadData, "invalid UTF-8 in close reason")
				return
			}
			reason = string(p[2:])
		}
	}
	rs.stopped = true
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeRecv = true
	if c.cause == nil {
		c.cause = &CloseError{Code: code, Reason: reason, Remote: true}
	}
	switch {
	case c.phase >= phaseDown:
	case c.phase == phaseOpen:
		c.startCloseLocked(code, "")
	case c.closeWritten:
		c.handshakeDoneLocked()
	}
}

// fail fails the connection from the reading goroutine.
func (c *Conn) fail(code StatusCode, reason string) {
	var err error
	switch code {
	case StatusInvalidFramePayloadData:
		err = ErrInvalidUTF8
	case StatusMessageTooBig:
		err = ErrMessageTooBig
	default:
		err = fmt.Errorf("%w: %s", ErrProtocol, reason)
	}
	rs := &c.rs
	rs.discard = true
	rs.msgOp = 0
	c.msgStart.Store(0)
	c.releaseMsg()
	c.mu.Lock()
	c.failLocked(code, err, reason)
	c.mu.Unlock()
}

func (c *Conn) failTooBig() {
	c.fail(StatusMessageTooBig, "message too big")
}

// shutdown ends the connection without a handshake, from the reader.
func (c *Conn) shutdown() {
	c.mu.Lock()
	c.shutdownLocked()
	c.mu.Unlock()
}

// onEOF handles the end of input.
func (c *Conn) onEOF() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause == nil && !(c.closeRecv && c.phase >= phaseClosing) {
		c.cause = &CloseError{Code: StatusAbnormalClosure, Err: errEOF}
	}
	c.shutdownLocked()
}
