package conformance

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// validCloseCodes may be received and are echoed back: the codes of RFC
// 6455 section 7.4.1 that may be sent, 1012 to 1014 from the IANA
// registry, and the edges of the library and application ranges.
var validCloseCodes = []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999}

// invalidCloseCodes must be refused with 1002: out of range, reserved for
// local use (1004 to 1006, 1015), or unassigned in the protocol range.
var invalidCloseCodes = []uint16{0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535}

// closeCases checks the closing handshake (RFC 6455 sections 5.5.1, 7;
// Autobahn section 7).
func (s *suite) closeCases() []testCase {
	var cs []testCase
	for _, code := range validCloseCodes {
		cs = append(cs, testCase{fmt.Sprintf("code=%d", code), func(t *testing.T) {
			c := s.dial(t)
			c.sendClose(code, "")
			c.expectClose(int(code))
		}})
	}
	for _, code := range invalidCloseCodes {
		cs = append(cs, testCase{fmt.Sprintf("code=%d", code), func(t *testing.T) {
			c := s.dial(t)
			c.sendClose(code, "")
			c.expectClose(codeProtocol)
		}})
	}
	// closing returns a case that sends wire, which contains a close frame,
	// and expects msgs and then a close frame with one of codes. The close
	// frame is an invalid one if the server must answer with an error.
	closing := func(name string, wire []byte, chunk int, codes []int, msgs ...wantMsg) testCase {
		return testCase{name, func(t *testing.T) {
			c := s.dial(t)
			c.closeSent = closeValid
			if slices.Contains(codes, codeProtocol) || slices.Contains(codes, codeInvalidData) {
				c.closeSent = closeInvalid
			}
			c.sendChunks(wire, chunk)
			for _, m := range msgs {
				c.expectMessage(m.op, m.data)
			}
			c.expectClose(codes...)
		}}
	}
	normal := []int{codeNormal}
	big := binaryPayload(256<<10, 7)
	cs = append(cs,
		closing("empty", emptyCloseFrame(), 0, []int{noStatus, codeNormal}),
		closing("payload=1-byte", message(opClose, []byte{0x03}), 0, protocolError),
		closing("payload=126", closeFrame(1000, strings.Repeat("r", 124)), 0, protocolError),
		closing("reason=123-bytes", closeFrame(1000, strings.Repeat("r", 123)), 0, normal),
		closing("reason=utf8", closeFrame(1000, kosme), 0, normal),
		closing("reason=invalid-utf8", closeFrame(1000, kosme+"\xed\xa0\x80edited"), 0, []int{codeInvalidData}),
		closing("1-byte-writes", closeFrame(1000, "bye"), 1, normal),
		closing("after-echo", cat(textFrame("before the close"), closeFrame(1000, "")), 0, normal, wantText("before the close")),
		s.sized(len(big), closing("after-large-message", cat(binaryFrame(big), closeFrame(1000, "")), 0, normal, wantBinary(big))),
		closing("then-text-ignored", cat(closeFrame(1000, ""), textFrame("after the close")), 0, normal),
		closing("then-ping-ignored", cat(closeFrame(1000, ""), pingFrame([]byte("after the close"))), 0, normal),
		closing("twice", cat(closeFrame(1000, ""), closeFrame(1001, "")), 0, normal),
		closing("in-fragmented-message",
			cat(rawFrame(false, 0, opText, []byte("never ")), closeFrame(1000, ""), rawFrame(true, 0, opContinuation, []byte("finished"))),
			0, normal),
		testCase{"server-closes-tcp", func(t *testing.T) {
			c := s.dial(t)
			c.sendClose(1000, "")
			start := time.Now()
			ev := c.recv(ioTimeout)
			if ev.kind != evClose || ev.code != codeNormal {
				c.failf("want a close frame with code 1000; got %s", ev)
			}
			next := c.recv(closeTimeout)
			if next.kind != evEOF {
				c.failf("after the close frame the server must close TCP within %v; got %s", closeTimeout, next)
			}
			t.Logf("close frame after %v, TCP closed %v after it", ev.at.Sub(start).Round(time.Microsecond), next.at.Sub(ev.at).Round(time.Microsecond))
		}},
	)
	return cs
}
