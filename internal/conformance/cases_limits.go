package conformance

import (
	"fmt"
	"testing"
)

// limitCases checks the message size limit and sustained traffic
// (RFC 6455 section 10.4; Autobahn sections 9 and 10).
func (s *suite) limitCases() []testCase {
	limit := s.cfg.MaxMessageSize
	var cs []testCase
	for _, op := range []byte{opText, opBinary} {
		cs = append(cs, testCase{fmt.Sprintf("max-size/%s", opName(op)), func(t *testing.T) {
			p := payloadFor(op, s.large)
			c := s.dial(t)
			c.send(message(op, p))
			c.expectMessage(op, p)
			c.closeNormally()
		}})
	}
	cs = append(cs, testCase{"max-size/4-fragments", func(t *testing.T) {
		p := payloadFor(opBinary, s.large)
		c := s.dial(t)
		c.send(fragments(opBinary, 0, p, (len(p)+3)/4))
		c.expectMessage(opBinary, p)
		c.closeNormally()
	}})
	// One byte over the limit. The server must refuse the message with
	// 1009, ideally as soon as the header shows it is too big; it need
	// not read the rest, so the suite does not answer the close frame.
	tooBig := func(name string, op byte, fragSize int) testCase {
		return testCase{name, func(t *testing.T) {
			if limit > maxLarge {
				t.Skipf("MaxMessageSize %d is over the %d bytes the suite sends", limit, maxLarge)
			}
			p := payloadFor(op, int(limit)+1)
			c := s.dial(t)
			c.send(fragments(op, 0, p, fragSize))
			c.expectAbort(sizeTimeout(len(p)), codeTooBig)
		}}
	}
	cs = append(cs,
		tooBig("max-size+1/text", opText, 0),
		tooBig("max-size+1/binary", opBinary, 0),
		tooBig("max-size+1/2-fragments", opBinary, int(limit/2+1)),
		tooBig("max-size+1/64KiB-fragments", opBinary, 64<<10),
		testCase{"max-size+1/header-only", func(t *testing.T) {
			// Only the header of a frame one byte over the limit: the
			// server can tell from the length field alone.
			c := s.dial(t)
			c.send(appendHeader(nil, true, 0, opBinary, true, randomKey(), uint64(limit)+1))
			c.expectAbort(ioTimeout, codeTooBig)
		}},
		testCase{"1000-messages-one-write", func(t *testing.T) {
			var wire []byte
			for i := range 1000 {
				wire = append(wire, textFrame(fmt.Sprintf("message %04d", i))...)
			}
			c := s.dial(t)
			c.send(wire)
			for i := range 1000 {
				c.expectText(fmt.Sprintf("message %04d", i))
			}
			c.closeNormally()
		}},
		testCase{"100-messages-of-64KiB", func(t *testing.T) {
			n := min(64<<10, s.large)
			var wire []byte
			payloads := make([][]byte, 100)
			for i := range payloads {
				payloads[i] = binaryPayload(n, uint64(i))
				wire = append(wire, binaryFrame(payloads[i])...)
			}
			c := s.dial(t)
			c.send(wire)
			for _, p := range payloads {
				c.expectMessage(opBinary, p)
			}
			c.closeNormally()
		}},
	)
	return cs
}
