package conformance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
)

// Opcodes from RFC 6455 section 5.2.
const (
	opContinuation byte = 0x0
	opText         byte = 0x1
	opBinary       byte = 0x2
	opClose        byte = 0x8
	opPing         byte = 0x9
	opPong         byte = 0xA
)

// Reserved bits as they sit in the first header byte.
const (
	rsv1 byte = 0x40
	rsv2 byte = 0x20
	rsv3 byte = 0x10
)

// maxControlPayload is the largest payload a control frame may carry
// (RFC 6455 section 5.5).
const maxControlPayload = 125

// frame is one WebSocket frame as it travels on the wire. The payload is
// always held unmasked; masking happens in appendTo and readFrame.
type frame struct {
	fin     bool
	rsv     byte // rsv1|rsv2|rsv3 bits, in header position
	opcode  byte
	masked  bool
	key     [4]byte
	payload []byte
}

// isControl reports whether op is a control opcode (close, ping, pong or a
// reserved control opcode).
func isControl(op byte) bool { return op&0x8 != 0 }

// opName returns a readable name for an opcode.
func opName(op byte) string {
	switch op {
	case opContinuation:
		return "continuation"
	case opText:
		return "text"
	case opBinary:
		return "binary"
	case opClose:
		return "close"
	case opPing:
		return "ping"
	case opPong:
		return "pong"
	}
	return fmt.Sprintf("opcode 0x%X", op)
}

// rsvName returns a readable name for a set of reserved bits.
func rsvName(rsv byte) string {
	s := ""
	for _, b := range []struct {
		bit  byte
		name string
	}{{rsv1, "RSV1"}, {rsv2, "RSV2"}, {rsv3, "RSV3"}} {
		if rsv&b.bit != 0 {
			if s != "" {
				s += "+"
			}
			s += b.name
		}
	}
	return s
}

// randomKey returns a masking key. Keys are random as RFC 6455 section 5.3
// requires; tests do not depend on their value.
func randomKey() [4]byte {
	var k [4]byte
	binary.LittleEndian.PutUint32(k[:], rand.Uint32())
	return k
}

// appendHeader appends a frame header that announces length payload bytes,
// using the shortest length encoding.
func appendHeader(b []byte, fin bool, rsv, opcode byte, masked bool, key [4]byte, length uint64) []byte {
	b0 := rsv&0x70 | opcode&0x0F
	if fin {
		b0 |= 0x80
	}
	var b1 byte
	if masked {
		b1 = 0x80
	}
	switch {
	case length <= 125:
		b = append(b, b0, b1|byte(length))
	case length <= 0xFFFF:
		b = append(b, b0, b1|126)
		b = binary.BigEndian.AppendUint16(b, uint16(length))
	default:
		b = append(b, b0, b1|127)
		b = binary.BigEndian.AppendUint64(b, length)
	}
	if masked {
		b = append(b, key[:]...)
	}
	return b
}

// appendTo appends the wire encoding of f to b.
func (f frame) appendTo(b []byte) []byte {
	b = appendHeader(b, f.fin, f.rsv, f.opcode, f.masked, f.key, uint64(len(f.payload)))
	start := len(b)
	b = append(b, f.payload...)
	if f.masked {
		maskBytes(f.key, 0, b[start:])
	}
	return b
}

// encode returns the wire encoding of f.
func (f frame) encode() []byte {
	return f.appendTo(make([]byte, 0, len(f.payload)+14))
}

// maskBytes XORs b in place with the masking key, starting at byte pos of
// the key stream, and returns the key position after b.
func maskBytes(key [4]byte, pos int, b []byte) int {
	pos &= 3
	// Byte-wise until the key stream is back at position 0, then eight bytes
	// at a time: large frames are masked and unmasked often in this suite.
	for len(b) > 0 && pos != 0 {
		b[0] ^= key[pos]
		b = b[1:]
		pos = (pos + 1) & 3
	}
	k4 := binary.LittleEndian.Uint32(key[:])
	k8 := uint64(k4) | uint64(k4)<<32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k8)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= key[i&3]
	}
	return (pos + len(b)) & 3
}

// errFrameTooLarge is returned by readFrame for a frame whose announced
// payload exceeds the reader's limit.
var errFrameTooLarge = errors.New("frame payload exceeds the suite's read limit")

// readFrame reads one frame from r. Payloads longer than maxPayload are not
// read; the error then is errFrameTooLarge. A connection that ends inside a
// frame yields io.ErrUnexpectedEOF; one that ends before the first byte,
// io.EOF.
func readFrame(r io.Reader, maxPayload uint64) (frame, error) {
	var f frame
	var h [8]byte
	if _, err := io.ReadFull(r, h[:2]); err != nil {
		return f, err
	}
	f.fin = h[0]&0x80 != 0
	f.rsv = h[0] & 0x70
	f.opcode = h[0] & 0x0F
	f.masked = h[1]&0x80 != 0
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		if _, err := io.ReadFull(r, h[:2]); err != nil {
			return f, unexpected(err)
		}
		n = uint64(binary.BigEndian.Uint16(h[:2]))
	case 127:
		if _, err := io.ReadFull(r, h[:8]); err != nil {
			return f, unexpected(err)
		}
		n = binary.BigEndian.Uint64(h[:8])
		if n>>63 != 0 {
			return f, fmt.Errorf("64-bit payload length has its most significant bit set (%#x)", n)
		}
	}
	if f.masked {
		if _, err := io.ReadFull(r, f.key[:]); err != nil {
			return f, unexpected(err)
		}
	}
	if n > maxPayload {
		return f, fmt.Errorf("%w: %s frame announces %d bytes, limit %d", errFrameTooLarge, opName(f.opcode), n, maxPayload)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return f, unexpected(err)
	}
	if f.masked {
		maskBytes(f.key, 0, f.payload)
	}
	return f, nil
}

// unexpected turns a clean EOF inside a frame into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Frame builders. Each returns the masked wire bytes of one client frame
// with a fresh random key; cases concatenate them to send exact sequences.

// rawFrame returns a masked frame with every header field chosen by the
// caller.
func rawFrame(fin bool, rsv, op byte, payload []byte) []byte {
	return frame{fin: fin, rsv: rsv, opcode: op, masked: true, key: randomKey(), payload: payload}.encode()
}

// message returns a single-frame message (FIN set, no reserved bits).
func message(op byte, payload []byte) []byte { return rawFrame(true, 0, op, payload) }

// textFrame returns a single-frame text message.
func textFrame(s string) []byte { return message(opText, []byte(s)) }

// binaryFrame returns a single-frame binary message.
func binaryFrame(p []byte) []byte { return message(opBinary, p) }

// pingFrame returns a ping with payload p.
func pingFrame(p []byte) []byte { return message(opPing, p) }

// pongFrame returns a pong with payload p.
func pongFrame(p []byte) []byte { return message(opPong, p) }

// closeFrame returns a close frame with a status code and reason. The code
// is written as given, so invalid codes can be sent too.
func closeFrame(code uint16, reason string) []byte {
	p := binary.BigEndian.AppendUint16(nil, code)
	return message(opClose, append(p, reason...))
}

// emptyCloseFrame returns a close frame without a payload.
func emptyCloseFrame() []byte { return message(opClose, nil) }

// unmaskedFrame returns a frame with the MASK bit clear, which a server
// must reject (RFC 6455 section 5.1).
func unmaskedFrame(op byte, payload []byte) []byte {
	return frame{fin: true, opcode: op, payload: payload}.encode()
}

// fragments splits payload into a message of frames carrying at most size
// bytes each: the first has opcode op, the rest are continuations, and
// only the last has FIN set. rsvFirst is set on the first frame only. An
// empty payload yields a single frame.
func fragments(op byte, rsvFirst byte, payload []byte, size int) []byte {
	if size <= 0 {
		size = len(payload)
	}
	var out []byte
	first := true
	for {
		n := min(size, len(payload))
		last := n == len(payload)
		o, r := opContinuation, byte(0)
		if first {
			o, r = op, rsvFirst
		}
		out = append(out, rawFrame(last, r, o, payload[:n])...)
		payload = payload[n:]
		first = false
		if last {
			return out
		}
	}
}

// splitMessage returns a message whose fragments hold the given parts in
// order: parts[0] in the opening frame (opcode op), the rest in
// continuation frames, FIN on the last one. Parts may be empty.
func splitMessage(op byte, parts ...[]byte) []byte {
	var out []byte
	for i, p := range parts {
		o := opContinuation
		if i == 0 {
			o = op
		}
		out = append(out, rawFrame(i == len(parts)-1, 0, o, p)...)
	}
	return out
}

// cat concatenates byte slices into one buffer, so that a sequence of
// frames can go out in a single TCP write.
func cat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
