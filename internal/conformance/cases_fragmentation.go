package conformance

import (
	"bytes"
	"fmt"
	"testing"
)

// fragmentationCases checks fragmented messages (RFC 6455 section 5.4;
// Autobahn section 5).
func (s *suite) fragmentationCases() []testCase {
	b := func(s string) []byte { return []byte(s) }
	interleaved := cat(
		rawFrame(false, 0, opText, b("frag")),
		pongFrame(b("unsolicited")),
		pingFrame(b("first")),
		rawFrame(false, 0, opContinuation, b("ment")),
		pingFrame(b("second")),
		rawFrame(true, 0, opContinuation, b("ed")),
	)
	interleavedCase := func(name string, chunk int) testCase {
		return testCase{name, func(t *testing.T) {
			c := s.dial(t)
			c.sendChunks(interleaved, chunk)
			c.expectPong(b("first"))
			c.expectPong(b("second"))
			c.expectText("fragmented")
			c.closeNormally()
		}}
	}
	longCase := func(op byte) testCase {
		n := min(1<<20, s.large)
		return testCase{fmt.Sprintf("%s/%d-bytes-in-64KiB-fragments", opName(op), n), func(t *testing.T) {
			p := payloadFor(op, n)
			c := s.dial(t)
			c.send(fragments(op, 0, p, 64<<10))
			c.expectMessage(op, p)
			c.closeNormally()
		}}
	}
	hundred := binaryPayload(100, 100)
	return []testCase{
		s.echoCase("text/2-fragments", splitMessage(opText, b("fragment one, "), b("fragment two")), 0, wantText("fragment one, fragment two")),
		s.echoCase("binary/2-fragments", splitMessage(opBinary, []byte{1, 2, 3}, []byte{4, 5}), 0, wantBinary([]byte{1, 2, 3, 4, 5})),
		s.echoCase("text/10-fragments", fragments(opText, 0, textPayload(100), 10), 0, msgOf(opText, textPayload(100))),
		s.echoCase("binary/100-fragments", fragments(opBinary, 0, hundred, 1), 0, wantBinary(hundred)),
		s.echoCase("text/empty-fragments",
			splitMessage(opText, nil, b("Hello"), nil, b(", "), nil, b("world"), nil), 0, wantText("Hello, world")),
		s.echoCase("binary/empty-fragments",
			splitMessage(opBinary, nil, []byte{0xFF}, nil, nil, []byte{0x00}), 0, wantBinary([]byte{0xFF, 0x00})),
		s.echoCase("text/all-fragments-empty", splitMessage(opText, nil, nil, nil), 0, wantText("")),
		s.echoCase("binary/all-fragments-empty", splitMessage(opBinary, nil, nil), 0, wantBinary(nil)),
		s.echoCase("text/2-fragments/1-byte-writes", splitMessage(opText, b("fragment one, "), b("fragment two")), 1, wantText("fragment one, fragment two")),
		s.echoCase("messages-after-fragmented",
			cat(splitMessage(opText, b("a"), b("b")), textFrame("c"), splitMessage(opBinary, []byte{1}, []byte{2})), 0,
			wantText("ab"), wantText("c"), wantBinary([]byte{1, 2})),
		longCase(opText),
		longCase(opBinary),
		interleavedCase("control-frames-interleaved", 0),
		interleavedCase("control-frames-interleaved/1-byte-writes", 1),
		s.failCase("continuation-without-start", rawFrame(true, 0, opContinuation, b("orphan")), 0, protocolError),
		s.failCase("continuation-without-start/fin=0",
			cat(rawFrame(false, 0, opContinuation, b("orphan")), rawFrame(true, 0, opContinuation, b("s"))), 0, protocolError),
		s.failCase("continuation-after-complete-message",
			cat(textFrame("complete"), rawFrame(true, 0, opContinuation, b("orphan"))), 0, protocolError, wantText("complete")),
		s.failCase("text-while-text-in-progress",
			cat(rawFrame(false, 0, opText, b("first")), textFrame("second")), 0, protocolError),
		s.failCase("binary-while-text-in-progress",
			cat(rawFrame(false, 0, opText, b("first")), binaryFrame([]byte{1})), 0, protocolError),
		s.failCase("text-while-binary-in-progress",
			cat(rawFrame(false, 0, opBinary, []byte{1}), rawFrame(false, 0, opText, b("second")), rawFrame(true, 0, opContinuation, b("!"))), 0, protocolError),
		s.failCase("ping-fragmented",
			cat(rawFrame(false, 0, opPing, b("frag")), rawFrame(true, 0, opContinuation, b("mented"))), 0, protocolError),
		s.failCase("ping-fin=0-alone", rawFrame(false, 0, opPing, b("no fin")), 0, protocolError),
		s.failCase("pong-fragmented",
			cat(rawFrame(false, 0, opPong, b("frag")), rawFrame(true, 0, opContinuation, b("mented"))), 0, protocolError),
		testCase{"close-fragmented", func(t *testing.T) {
			c := s.dial(t)
			c.closeSent = closeInvalid
			c.send(cat(rawFrame(false, 0, opClose, []byte{0x03}), rawFrame(true, 0, opContinuation, []byte{0xE8})))
			c.expectClose(codeProtocol)
		}},
		s.failCase("fragmented-control-in-fragmented-message",
			cat(rawFrame(false, 0, opText, b("a")), rawFrame(false, 0, opPing, b("b")), rawFrame(true, 0, opContinuation, b("c"))),
			0, protocolError),
		s.sized(125+126+65536+1, s.echoCase("text/fragments-of-every-size",
			splitMessage(opText, bytes.Repeat(b("x"), 125), bytes.Repeat(b("y"), 126), bytes.Repeat(b("z"), 65536), nil, b("!")),
			0, wantText(string(bytes.Repeat(b("x"), 125))+string(bytes.Repeat(b("y"), 126))+string(bytes.Repeat(b("z"), 65536))+"!"))),
	}
}
