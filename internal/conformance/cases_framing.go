package conformance

import (
	"fmt"
	"testing"
)

// framingCases checks payload lengths around the three length encodings,
// frames written one byte at a time, and masking (RFC 6455 sections 5.1
// to 5.3; Autobahn section 1).
func (s *suite) framingCases() []testCase {
	var cs []testCase
	sizes := []int{0, 125, 126, 127, 65535, 65536}
	if s.large > 65536 {
		sizes = append(sizes, s.large)
	}
	for _, op := range []byte{opText, opBinary} {
		for _, n := range sizes {
			cs = append(cs, testCase{fmt.Sprintf("%s/len=%d", opName(op), n), func(t *testing.T) {
				s.needSize(t, n)
				p := payloadFor(op, n)
				c := s.dial(t)
				c.send(message(op, p))
				c.expectMessage(op, p)
				c.closeNormally()
			}})
		}
		for _, n := range []int{0, 125, 126, 127} {
			p := payloadFor(op, n)
			cs = append(cs, s.echoCase(fmt.Sprintf("%s/len=%d/1-byte-writes", opName(op), n), message(op, p), 1, msgOf(op, p)))
		}
		cs = append(cs, testCase{fmt.Sprintf("%s/len=65536/997-byte-writes", opName(op)), func(t *testing.T) {
			s.needSize(t, 65536)
			p := payloadFor(op, 65536)
			c := s.dial(t)
			c.sendChunks(message(op, p), 997)
			c.expectMessage(op, p)
			c.closeNormally()
		}})
	}
	cs = append(cs,
		s.echoCase("several-messages-one-write",
			cat(textFrame("one"), binaryFrame([]byte{0, 1, 2}), textFrame("three")), 0,
			wantText("one"), wantBinary([]byte{0, 1, 2}), wantText("three")),
		// Every server frame is checked for the MASK bit; this case also
		// involves a pong and a 16-bit length.
		testCase{"server-frames-unmasked", func(t *testing.T) {
			bin := payloadFor(opBinary, 300)
			c := s.dial(t)
			c.send(cat(textFrame("mask"), pingFrame([]byte("mask")), binaryFrame(bin)))
			c.expectText("mask")
			c.expectPong([]byte("mask"))
			c.expectMessage(opBinary, bin)
			c.closeNormally()
		}},
		s.failCase("unmasked/text", unmaskedFrame(opText, []byte("unmasked")), 0, protocolError),
		s.failCase("unmasked/binary", unmaskedFrame(opBinary, []byte("unmasked")), 0, protocolError),
		s.failCase("unmasked/ping", unmaskedFrame(opPing, []byte("unmasked")), 0, protocolError),
		s.failCase("unmasked/after-echo",
			cat(textFrame("masked"), unmaskedFrame(opText, []byte("unmasked"))), 0, protocolError, wantText("masked")),
		// The most significant bit of a 64-bit length must be 0 (section
		// 5.2). A server may also call such a length too big.
		s.failCase("len64-msb-set",
			cat(appendHeader(nil, true, 0, opBinary, true, randomKey(), 1<<63|5), []byte("12345")), 0,
			[]int{codeProtocol, codeTooBig}),
	)
	return cs
}

// pingCases checks pings and pongs (RFC 6455 sections 5.5.2 and 5.5.3;
// Autobahn section 2).
func (s *suite) pingCases() []testCase {
	binPayload := make([]byte, 125)
	for i := range binPayload {
		binPayload[i] = byte(255 - i*2)
	}
	binPayload[1] = 0
	pingCase := func(name string, p []byte, chunk int) testCase {
		return testCase{name, func(t *testing.T) {
			c := s.dial(t)
			c.sendChunks(pingFrame(p), chunk)
			c.expectPong(p)
			c.closeNormally()
		}}
	}
	var tenPings []byte
	for i := range 10 {
		tenPings = append(tenPings, pingFrame(fmt.Appendf(nil, "ping %d", i))...)
	}
	tenPings = append(tenPings, textFrame("after the pings")...)
	tenCase := func(name string, chunk int) testCase {
		return testCase{name, func(t *testing.T) {
			c := s.dial(t)
			c.sendChunks(tenPings, chunk)
			for i := range 10 {
				c.expectPong(fmt.Appendf(nil, "ping %d", i))
			}
			c.expectText("after the pings")
			c.closeNormally()
		}}
	}
	inFragmented := func(name string, chunk int) testCase {
		return testCase{name, func(t *testing.T) {
			c := s.dial(t)
			c.sendChunks(cat(
				rawFrame(false, 0, opText, []byte("Hello, ")),
				pingFrame([]byte("in the middle")),
				rawFrame(true, 0, opContinuation, []byte("world!")),
			), chunk)
			c.expectPong([]byte("in the middle"))
			c.expectText("Hello, world!")
			c.closeNormally()
		}}
	}
	return []testCase{
		pingCase("payload=0", nil, 0),
		pingCase("payload=125", textPayload(125), 0),
		pingCase("payload=125/binary", binPayload, 0),
		pingCase("payload=125/1-byte-writes", textPayload(125), 1),
		s.failCase("payload=126", pingFrame(textPayload(126)), 0, protocolError),
		s.failCase("pong-payload=126", pongFrame(textPayload(126)), 0, protocolError),
		s.echoCase("unsolicited-pong", cat(pongFrame(nil), textFrame("after the pong")), 0, wantText("after the pong")),
		s.echoCase("unsolicited-pong/payload=125", cat(pongFrame(binPayload), textFrame("after the pong")), 0, wantText("after the pong")),
		testCase{"unsolicited-pong-then-ping", func(t *testing.T) {
			c := s.dial(t)
			c.send(cat(pongFrame([]byte("unsolicited")), pingFrame([]byte("solicited"))))
			c.expectPong([]byte("solicited"))
			c.closeNormally()
		}},
		inFragmented("in-fragmented-message", 0),
		inFragmented("in-fragmented-message/1-byte-writes", 1),
		tenCase("10-in-a-row", 0),
		tenCase("10-in-a-row/1-byte-writes", 1),
	}
}

// rsvCases checks that reserved bits without a negotiated extension fail
// the connection (RFC 6455 section 5.2; Autobahn section 3). No extension
// is offered on these connections, so RSV1 is as illegal as the others.
func (s *suite) rsvCases() []testCase {
	var cs []testCase
	for _, bits := range []byte{rsv1, rsv2, rsv3, rsv1 | rsv2 | rsv3} {
		name := map[byte]string{rsv1: "rsv1", rsv2: "rsv2", rsv3: "rsv3", rsv1 | rsv2 | rsv3: "rsv1+2+3"}[bits]
		afterEcho := cat(textFrame("valid"), rawFrame(true, bits, opText, []byte("reserved bits")), pingFrame([]byte("too late")))
		cs = append(cs,
			s.failCase(name+"/text", rawFrame(true, bits, opText, []byte("reserved bits")), 0, protocolError),
			s.failCase(name+"/binary", rawFrame(true, bits, opBinary, []byte{0, 1, 2, 3}), 0, protocolError),
			s.failCase(name+"/ping", rawFrame(true, bits, opPing, []byte("reserved bits")), 0, protocolError),
			testCase{name + "/close", func(t *testing.T) {
				c := s.dial(t)
				c.closeSent = closeInvalid
				c.send(rawFrame(true, bits, opClose, []byte{0x03, 0xE8}))
				c.expectClose(codeProtocol)
			}},
			s.failCase(name+"/after-echo", afterEcho, 0, protocolError, wantText("valid")),
			s.failCase(name+"/after-echo/1-byte-writes", afterEcho, 1, protocolError, wantText("valid")),
		)
	}
	return cs
}

// opcodeCases checks that reserved opcodes fail the connection (RFC 6455
// section 5.2; Autobahn section 4).
func (s *suite) opcodeCases() []testCase {
	var cs []testCase
	for _, op := range []byte{3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF} {
		name := fmt.Sprintf("op=%d", op)
		if op > 9 {
			name = fmt.Sprintf("op=0x%X", op)
		}
		cs = append(cs,
			s.failCase(name, rawFrame(true, 0, op, nil), 0, protocolError),
			s.failCase(name+"/after-echo",
				cat(textFrame("valid"), rawFrame(true, 0, op, []byte("reserved opcode")), pingFrame([]byte("too late"))),
				0, protocolError, wantText("valid")),
		)
	}
	return cs
}
