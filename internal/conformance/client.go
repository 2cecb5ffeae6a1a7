package conformance

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"
)

// Time limits. Every wait in the suite has one of these deadlines, so a
// broken server fails a case instead of hanging it.
const (
	// ioTimeout bounds one expectation: an echo, a pong, a close frame.
	ioTimeout = 5 * time.Second
	// closeTimeout is how long the server may keep TCP open after the
	// closing handshake completed.
	closeTimeout = time.Second
	// abortTimeout is how long the server may keep TCP open after it sent
	// a close frame that the suite cannot answer, because the suite left a
	// frame unfinished on purpose.
	abortTimeout = 3 * time.Second
	// splitPause separates chunked writes so that they reach the server as
	// separate TCP segments and separate reads.
	splitPause = 100 * time.Microsecond
)

// maxLarge caps the largest message the suite sends.
const maxLarge = 16 << 20

// noStatus is the status the suite reports for a close frame without a
// payload (RFC 6455 section 7.1.5); it never appears on the wire.
const noStatus = 1005

// wsGUID is the key suffix of RFC 6455 section 1.3.
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// sizeTimeout is ioTimeout extended for large transfers: a second more
// per MiB, so a 16 MiB echo under the race detector on a busy machine
// still fits (it takes about 5 s on two cores).
func sizeTimeout(n int) time.Duration {
	return ioTimeout + time.Duration(n>>20)*time.Second
}

// conn is the raw test client: it writes exact byte sequences and reads
// the server's frames back, checking each against the rules every server
// frame must follow.
//
// Methods are called from the case's goroutine only. Writes run on a
// helper goroutine, one after another in call order, so the case can read
// the echo of a large message while it is still being written.
type conn struct {
	t    testing.TB
	s    *suite
	nc   net.Conn
	br   *bufio.Reader
	resp *http.Response

	pmd      *pmdParams    // negotiated permessage-deflate, nil if none
	inflater *decompressor // inflates server messages when pmd != nil

	// The server message being assembled from fragments.
	inMsg         bool
	msgOp         byte
	msgCompressed bool
	msgBuf        []byte

	received  []string   // what the server sent, for failure messages
	closeSent closeState // whether the suite sent a close frame, and what kind
	ended     *event     // the terminal event: EOF, timeout or error

	pending chan struct{} // closed when the last queued write finished
	wmu     sync.Mutex
	werr    error // first write error
}

// newConn wraps an upgraded connection.
func newConn(t testing.TB, s *suite, nc net.Conn, br *bufio.Reader, resp *http.Response) *conn {
	c := &conn{t: t, s: s, nc: nc, br: br, resp: resp}
	t.Cleanup(func() {
		nc.Close()
		if c.pending != nil {
			<-c.pending
		}
	})
	return c
}

// setPMD records the negotiated permessage-deflate parameters.
func (c *conn) setPMD(p *pmdParams) {
	c.pmd = p
	if p != nil {
		c.inflater = &decompressor{takeover: !p.serverNoContextTakeover, window: 1 << p.serverMaxWindowBits}
	}
}

// newCompressor returns a compressor that keeps to the negotiated
// parameters: context takeover only if allowed, and no back-references at
// all if the server limited the client's window.
func (c *conn) newCompressor(level int) *compressor {
	if c.pmd == nil {
		c.t.Fatal("conformance: compressing on a connection without permessage-deflate")
	}
	if c.pmd.clientMaxWindowBits < 15 && level != flate.NoCompression {
		// compress/flate always uses a 32 KiB window; Huffman-only
		// coding never refers back, so it fits any window.
		level = flate.HuffmanOnly
	}
	return newCompressor(level, !c.pmd.clientNoContextTakeover)
}

// send queues b for one TCP write.
func (c *conn) send(b []byte) { c.sendChunks(b, 0) }

// sendChunks queues b to be written in writes of chunk bytes each (all at
// once if chunk <= 0), with a short pause between writes. Write errors are
// not fatal: a server may rightly close the connection while the suite is
// still writing. The first one is kept and reported with the next failed
// expectation.
func (c *conn) sendChunks(b []byte, chunk int) {
	prev := c.pending
	done := make(chan struct{})
	c.pending = done
	timeout := 2 * sizeTimeout(len(b))
	if chunk > 0 {
		timeout += time.Duration(len(b)/chunk) * 2 * splitPause
	}
	go func() {
		defer close(done)
		if prev != nil {
			<-prev
		}
		if c.writeErr() != nil {
			return
		}
		if err := c.nc.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
			c.setWriteErr(err)
			return
		}
		if chunk <= 0 {
			chunk = len(b)
		}
		for first := true; len(b) > 0 || first; first = false {
			if !first {
				time.Sleep(splitPause)
			}
			n := min(chunk, len(b))
			if _, err := c.nc.Write(b[:n]); err != nil {
				c.setWriteErr(err)
				return
			}
			b = b[n:]
		}
	}()
}

func (c *conn) writeErr() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.werr
}

func (c *conn) setWriteErr(err error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr == nil {
		c.werr = err
	}
}

// closeState records the close frame the suite sent, if any.
type closeState int

const (
	closeNone closeState = iota
	// closeValid: a valid close frame; the server's answer completes the
	// closing handshake.
	closeValid
	// closeInvalid: a frame with the close opcode that the server must
	// treat as a protocol error. No reply is due to the server's close
	// frame, and no closing handshake completes.
	closeInvalid
)

// sendClose sends a close frame with code and reason and notes whether it
// was a valid one.
func (c *conn) sendClose(code uint16, reason string) {
	c.closeSent = closeInvalid
	if sendableCloseCode(int(code)) && utf8.ValidString(reason) && len(reason) <= maxControlPayload-2 {
		c.closeSent = closeValid
	}
	c.send(closeFrame(code, reason))
}

// eventKind classifies what the server did next.
type eventKind int

const (
	evMessage eventKind = iota // a complete data message
	evPing                     // not returned: server pings are noted and skipped
	evPong
	evClose
	evEOF     // the server closed the TCP connection
	evTimeout // nothing arrived before the deadline
	evError   // the server broke a framing rule, or the read failed
)

// event is one thing the server did.
type event struct {
	kind       eventKind
	op         byte   // evMessage: opText or opBinary
	data       []byte // message payload (inflated), pong payload or close reason
	compressed bool   // evMessage: the server sent it with RSV1
	code       int    // evClose: status code, or noStatus
	err        error  // evEOF, evError, evTimeout: the cause
	at         time.Time
}

// String describes e for failure messages.
func (e event) String() string {
	switch e.kind {
	case evMessage:
		s := fmt.Sprintf("%s message (%s)", opName(e.op), preview(e.data))
		if e.compressed {
			s = "compressed " + s
		}
		return s
	case evPong:
		return fmt.Sprintf("pong (%s)", preview(e.data))
	case evPing:
		return fmt.Sprintf("ping (%s)", preview(e.data))
	case evClose:
		if e.code == noStatus {
			return "close frame without status code"
		}
		return fmt.Sprintf("close frame with code %d, reason %q", e.code, e.data)
	case evEOF:
		return fmt.Sprintf("TCP connection closed by the server (%v)", e.err)
	case evTimeout:
		return fmt.Sprintf("nothing (%v)", e.err)
	}
	return fmt.Sprintf("error: %v", e.err)
}

// preview summarizes a payload: its length and the start of its content.
func preview(b []byte) string {
	const limit = 40
	if len(b) == 0 {
		return "0 bytes"
	}
	head := b
	if len(head) > limit {
		head = head[:limit]
	}
	more := ""
	if len(b) > limit {
		more = "..."
	}
	if utf8.Valid(head) || len(b) > limit && utf8.Valid(head[:limit-3]) {
		return fmt.Sprintf("%d bytes: %q%s", len(b), head, more)
	}
	return fmt.Sprintf("%d bytes: % x%s", len(b), head, more)
}

// recv returns the next thing the server does within timeout: a complete
// data message, a pong, a close frame, the end of the TCP connection, a
// timeout, or a broken rule. Server pings are noted and skipped. After an
// EOF, timeout or error, recv keeps returning that event.
func (c *conn) recv(timeout time.Duration) event {
	if c.ended != nil {
		return *c.ended
	}
	// An error here means the connection is already closed (net.Pipe also
	// refuses deadlines once the far end closed); the read reports it.
	_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := readFrame(c.br, uint64(c.s.readLimit))
		if err != nil {
			return c.end(readFailure(err, timeout))
		}
		ev, ok := c.handle(f)
		if !ok {
			continue
		}
		ev.at = time.Now()
		c.note(ev.String())
		if ev.kind == evError {
			c.ended = &ev
		}
		return ev
	}
}

// end records a terminal event.
func (c *conn) end(ev event) event {
	ev.at = time.Now()
	c.note(ev.String())
	c.ended = &ev
	return ev
}

// readFailure classifies a failed frame read.
func readFailure(err error, timeout time.Duration) event {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return event{kind: evTimeout, err: fmt.Errorf("nothing arrived within %v", timeout)}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return event{kind: evEOF, err: errors.New("in the middle of a frame")}
	case errors.Is(err, io.EOF):
		return event{kind: evEOF, err: errors.New("FIN")}
	case errors.Is(err, syscall.ECONNRESET):
		return event{kind: evEOF, err: errors.New("RST")}
	}
	return event{kind: evError, err: err}
}

// note appends to the log of what the server sent.
func (c *conn) note(s string) {
	const keep = 40
	c.received = append(c.received, s)
	if len(c.received) > keep {
		c.received = append(c.received[:1], c.received[len(c.received)-keep+1:]...)
		c.received[1] = "..."
	}
}

// errorf returns an error event.
func errorf(format string, args ...any) (event, bool) {
	return event{kind: evError, err: fmt.Errorf(format, args...)}, true
}

// handle applies one server frame to the connection state. It returns an
// event when the frame completes something the case can see; a fragment
// of a message or a server ping yields ok == false.
func (c *conn) handle(f frame) (ev event, ok bool) {
	if f.masked {
		return errorf("server sent a masked %s frame; servers must not mask (RFC 6455 section 5.1)", opName(f.opcode))
	}
	if isControl(f.opcode) {
		switch {
		case f.opcode != opClose && f.opcode != opPing && f.opcode != opPong:
			return errorf("server sent a frame with reserved opcode 0x%X", f.opcode)
		case !f.fin:
			return errorf("server sent a fragmented %s frame (FIN clear)", opName(f.opcode))
		case len(f.payload) > maxControlPayload:
			return errorf("server sent a %s frame with a %d-byte payload; control frames carry at most 125", opName(f.opcode), len(f.payload))
		case f.rsv != 0:
			return errorf("server sent a %s frame with %s set", opName(f.opcode), rsvName(f.rsv))
		}
		switch f.opcode {
		case opPing:
			c.note(event{kind: evPing, data: f.payload}.String() + " from the server, ignored")
			return event{}, false
		case opPong:
			return event{kind: evPong, data: f.payload}, true
		}
		return closeEvent(f.payload)
	}
	switch f.opcode {
	case opText, opBinary:
		if c.inMsg {
			return errorf("server started a %s message before finishing its fragmented %s message", opName(f.opcode), opName(c.msgOp))
		}
		allowed := byte(0)
		if c.pmd != nil {
			allowed = rsv1
		}
		if f.rsv&^allowed != 0 {
			return errorf("server sent a %s frame with %s set (negotiated permessage-deflate: %v)", opName(f.opcode), rsvName(f.rsv), c.pmd != nil)
		}
		c.inMsg, c.msgOp, c.msgCompressed, c.msgBuf = true, f.opcode, f.rsv&rsv1 != 0, f.payload
	case opContinuation:
		if !c.inMsg {
			return errorf("server sent a continuation frame with no message in progress")
		}
		if f.rsv != 0 {
			return errorf("server sent a continuation frame with %s set", rsvName(f.rsv))
		}
		if int64(len(c.msgBuf)+len(f.payload)) > c.s.readLimit {
			return errorf("server message exceeds %d bytes", c.s.readLimit)
		}
		c.msgBuf = append(c.msgBuf, f.payload...)
	default:
		return errorf("server sent a frame with reserved opcode 0x%X", f.opcode)
	}
	if !f.fin {
		return event{}, false
	}
	c.inMsg = false
	data := c.msgBuf
	c.msgBuf = nil
	if c.msgCompressed {
		var err error
		data, err = c.inflater.decompress(data, c.s.readLimit)
		if err != nil {
			return errorf("server sent a compressed %s message that does not inflate: %v", opName(c.msgOp), err)
		}
	}
	if c.msgOp == opText && !utf8.Valid(data) {
		return errorf("server sent a text message that is not valid UTF-8 (%s)", preview(data))
	}
	return event{kind: evMessage, op: c.msgOp, data: data, compressed: c.msgCompressed}, true
}

// closeEvent parses a close frame payload from the server.
func closeEvent(p []byte) (event, bool) {
	switch {
	case len(p) == 0:
		return event{kind: evClose, code: noStatus}, true
	case len(p) == 1:
		return errorf("server sent a close frame with a 1-byte payload")
	}
	code := int(binary.BigEndian.Uint16(p))
	if !sendableCloseCode(code) {
		return errorf("server sent close code %d, which must not be sent in a close frame", code)
	}
	if !utf8.Valid(p[2:]) {
		return errorf("server sent close code %d with a reason that is not valid UTF-8: % x", code, p[2:])
	}
	return event{kind: evClose, code: code, data: p[2:]}, true
}

// sendableCloseCode reports whether code may appear in a close frame: the
// codes RFC 6455 section 7.4.1 defines for use on the wire, 1012 to 1014
// registered with IANA since, and the ranges for libraries (3000-3999) and
// applications (4000-4999).
func sendableCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1014:
		return true
	case code >= 3000 && code <= 4999:
		return true
	}
	return false
}

// history describes what the server sent so far, and whether a write
// failed, for failure messages.
func (c *conn) history() string {
	var b strings.Builder
	b.WriteString("server sent, in order: ")
	if len(c.received) == 0 {
		b.WriteString("nothing")
	}
	for i, s := range c.received {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(s)
	}
	if err := c.writeErr(); err != nil {
		fmt.Fprintf(&b, " (a write of the suite failed: %v)", err)
	}
	return b.String()
}

// failf fails the case with a description of what arrived.
func (c *conn) failf(format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("%s\n%s", fmt.Sprintf(format, args...), c.history())
}

// expectMessage requires the next event to be a message of type op with
// payload want.
func (c *conn) expectMessage(op byte, want []byte) {
	c.t.Helper()
	ev := c.recv(sizeTimeout(len(want)))
	if ev.kind != evMessage || ev.op != op {
		c.failf("want the echo: %s message (%s); got %s", opName(op), preview(want), ev)
	}
	if !bytes.Equal(ev.data, want) {
		c.failf("want the echo: %s message (%s); got a different payload: %s", opName(op), preview(want), difference(want, ev.data))
	}
}

// expectText requires the next event to be the text message s.
func (c *conn) expectText(s string) {
	c.t.Helper()
	c.expectMessage(opText, []byte(s))
}

// expectPong requires the next event to be a pong with payload want.
func (c *conn) expectPong(want []byte) {
	c.t.Helper()
	ev := c.recv(ioTimeout)
	if ev.kind != evPong {
		c.failf("want a pong (%s); got %s", preview(want), ev)
	}
	if !bytes.Equal(ev.data, want) {
		c.failf("want a pong (%s); got a pong with a different payload: %s", preview(want), difference(want, ev.data))
	}
}

// expectClose requires the next event to be a close frame with one of the
// codes (noStatus for an empty close frame). Unless the suite already sent
// a close frame, it answers with one, completing the closing handshake.
// Then the server must close TCP, sending nothing more: within
// closeTimeout after a completed closing handshake, within abortTimeout if
// the suite's close frame was invalid.
func (c *conn) expectClose(codes ...int) event {
	c.t.Helper()
	return c.awaitClose(ioTimeout, true, codes)
}

// expectAbort is expectClose for a connection on which the suite may have
// left a frame unfinished: it does not answer the close frame (its bytes
// could land inside the unfinished frame), and the server, having failed
// the connection, must close TCP within abortTimeout. The close frame must
// arrive within timeout.
func (c *conn) expectAbort(timeout time.Duration, codes ...int) event {
	c.t.Helper()
	return c.awaitClose(timeout, false, codes)
}

// awaitClose implements expectClose and expectAbort.
func (c *conn) awaitClose(timeout time.Duration, reply bool, codes []int) event {
	c.t.Helper()
	ev := c.recv(timeout)
	if ev.kind != evClose || !slices.Contains(codes, ev.code) {
		c.failf("want a close frame with %s; got %s", codeList(codes), ev)
	}
	// After a completed closing handshake the server has nothing left to
	// wait for; after failing the connection without getting a reply it
	// may take a little longer.
	wait := closeTimeout
	switch {
	case c.closeSent == closeNone && reply:
		c.closeSent = closeValid
		if ev.code == noStatus {
			c.send(emptyCloseFrame())
		} else {
			c.send(closeFrame(uint16(ev.code), ""))
		}
	case c.closeSent != closeValid:
		wait = abortTimeout
	}
	next := c.recv(wait)
	switch next.kind {
	case evEOF:
	case evTimeout:
		c.failf("after the close frame the server did not close the TCP connection within %v", wait)
	default:
		c.failf("the server sent %s after its close frame", next)
	}
	return ev
}

// closeNormally runs the closing handshake at the end of a successful case:
// the suite sends 1000 and expects 1000 back, then the TCP close.
func (c *conn) closeNormally() {
	c.t.Helper()
	c.sendClose(1000, "")
	c.expectClose(1000)
}

// codeList describes a set of acceptable close codes.
func codeList(codes []int) string {
	parts := make([]string, len(codes))
	for i, code := range codes {
		if code == noStatus {
			parts[i] = "no status code"
		} else {
			parts[i] = fmt.Sprintf("code %d", code)
		}
	}
	return strings.Join(parts, " or ")
}

// difference describes how got differs from want.
func difference(want, got []byte) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d bytes instead of %d (%s)", len(got), len(want), preview(got))
	}
	for i := range want {
		if want[i] != got[i] {
			return fmt.Sprintf("first difference at byte %d: got 0x%02x, want 0x%02x", i, got[i], want[i])
		}
	}
	return "equal"
}
