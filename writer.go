package wsgate

import (
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
)

// fragmentSize is how much a streaming writer buffers before it sends a
// fragment.
const fragmentSize = 32 << 10

// Writer returns a writer for one message of type typ, sent in fragments
// as it is written, so that a large message never has to be held whole.
// The message ends when the writer is closed; until then other writes to
// the connection wait (their ctx and WriteTimeout still apply), since
// frames of two messages must not interleave.
//
// Each Write sends a fragment once 32 KiB are buffered; Close sends the
// rest and must be called. Text must be valid UTF-8 as a whole: an invalid
// byte fails the Write that carries it and the connection, since the
// message cannot be taken back once fragments went out. A full send queue
// makes Write wait for room (until ctx is done or WriteTimeout passes)
// under every policy but PolicyClose, which closes the connection; when a
// stream cannot go on, the connection closes with 1008 or 1011.
//
// ctx bounds the waiting of every Write and of Close.
func (c *Conn) Writer(ctx context.Context, typ MessageType) (io.WriteCloser, error) {
	if typ != TextMessage && typ != BinaryMessage {
		return nil, fmt.Errorf("wsgate: writer: invalid message type %d", int(typ))
	}
	w := &messageWriter{c: c, ctx: ctx, typ: typ, first: true}
	c.mu.Lock()
	for {
		if c.phase != phaseOpen {
			err := &closedErr{op: "writer", cause: c.cause}
			c.mu.Unlock()
			return nil, err
		}
		x := c.extLocked()
		if x.stream == nil {
			x.stream = &streamSlot{w: w, free: make(chan struct{})}
			break
		}
		ch := x.stream.free
		c.mu.Unlock()
		select {
		case <-ch:
		case <-c.Done():
		case <-ctx.Done():
			return nil, fmt.Errorf("wsgate: writer: %w", ctx.Err())
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	if c.deflate != nil {
		w.zbuf = &bytes.Buffer{}
		level := flate.BestSpeed
		if c.deflate.huffmanOnly {
			level = flate.HuffmanOnly
		}
		w.zw, _ = flate.NewWriter(w.zbuf, level)
	}
	return w, nil
}

// messageWriter is the io.WriteCloser returned by Writer.
type messageWriter struct {
	c      *Conn
	ctx    context.Context
	typ    MessageType
	first  bool // no fragment sent yet
	closed bool
	err    error // sticky
	buf    []byte
	utf8   utf8Validator
	size   int // payload bytes written so far

	zw   *flate.Writer // compressing the stream, when negotiated
	zbuf *bytes.Buffer
}

// Write buffers p and sends full fragments.
func (w *messageWriter) Write(p []byte) (int, error) {
	if w.closed {
		return 0, fmt.Errorf("wsgate: message writer: %w", ErrClosed)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.typ == TextMessage && !w.utf8.write(p) {
		w.fail(StatusInvalidFramePayloadData, fmt.Errorf("wsgate: message writer: %w", ErrInvalidUTF8))
		return 0, w.err
	}
	n := len(p)
	w.size += n
	for len(p) > 0 {
		k := min(len(p), fragmentSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == fragmentSize {
			if err := w.flush(false); err != nil {
				return n - len(p) - k, err
			}
		}
	}
	return n, nil
}

// Close sends the last fragment and frees the connection for other writes.
func (w *messageWriter) Close() error {
	if w.closed {
		return nil
	}
	if w.err == nil && w.typ == TextMessage && !w.utf8.complete() {
		w.fail(StatusInvalidFramePayloadData, fmt.Errorf("wsgate: message writer: %w", ErrInvalidUTF8))
	}
	if w.err == nil {
		w.flush(true)
		if w.err == nil {
			w.c.msgsOut.Add(1)
			w.c.bytesOut.Add(uint64(w.size))
		}
	}
	w.closed = true
	w.release()
	return w.err
}

// flush sends the buffered bytes as one fragment.
func (w *messageWriter) flush(fin bool) error {
	payload := w.buf
	rsv1 := false
	if w.zw != nil {
		w.zbuf.Reset()
		w.zw.Write(w.buf)
		w.zw.Flush()
		payload = w.zbuf.Bytes()
		if fin {
			payload = bytes.TrimSuffix(payload, []byte{0, 0, 0xff, 0xff})
		}
		rsv1 = w.first
	}
	op := byte(opContinuation)
	if w.first {
		op = byte(w.typ)
	}
	c := w.c
	c.mu.Lock()
	if err := c.waitRoomLocked(w.ctx, len(w.buf), w); err != nil {
		// The message is cut: the connection cannot go on.
		w.fail(StatusPolicyViolation, err)
		return w.err
	}
	c.appendFrameLocked(fin, rsv1, op, payload, len(w.buf), true)
	pending := len(c.q.out) - c.q.outOff
	n, err := c.flushLocked(true)
	if err != nil && n < pending {
		w.err = &closedErr{op: "write", cause: c.cause}
	}
	c.mu.Unlock()
	c.budgetCheck()
	w.first = false
	w.buf = w.buf[:0]
	return w.err
}

// fail ends a stream that cannot be completed, and with it the connection.
func (w *messageWriter) fail(code StatusCode, err error) {
	w.err = err
	c := w.c
	c.mu.Lock()
	c.failLocked(code, err, "message cut off")
	c.mu.Unlock()
}

// release frees the connection's message slot.
func (w *messageWriter) release() {
	c := w.c
	c.mu.Lock()
	if x := c.ext; x != nil && x.stream != nil && x.stream.w == w {
		close(x.stream.free)
		x.stream = nil
	}
	c.mu.Unlock()
	w.buf = nil
}
