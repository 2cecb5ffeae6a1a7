// Package conformance is an RFC 6455 and RFC 7692 conformance suite for
// WebSocket echo servers, in the spirit of the Autobahn|Testsuite.
//
// [Run] drives a running server through a raw test client that builds
// every frame byte by byte, so it can send what a well-behaved library
// never would: unmasked frames, reserved bits and opcodes, invalid UTF-8,
// bad close codes, oversized and half-written frames. Each case is a
// subtest named section/case, for example "framing/text/len=65536",
// "utf8/invalid/overlong-2byte" or "close/code=1004".
//
// The server under test must echo every data message back with its type
// (text or binary) and send no other messages. docs/conformance.md lists
// the cases and the choices the suite makes where the RFCs leave one.
package conformance

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// Config describes the server under test.
type Config struct {
	// URL is the ws:// URL of an echo endpoint, for example
	// ws://127.0.0.1:8080/ws. The endpoint echoes each message back with
	// its type and sends no other messages.
	URL string

	// MaxMessageSize is the server's read limit in bytes and must be
	// positive. The suite sends messages of up to min(MaxMessageSize,
	// 16 MiB) and expects a message one byte longer to be refused with
	// close code 1009.
	MaxMessageSize int64

	// Compression says that the server has permessage-deflate (RFC 7692)
	// enabled: the suite then runs the compression cases. When false, the
	// suite checks that the server declines the extension instead.
	Compression bool

	// Origin is the Origin header value the client sends. Defaults to
	// http:// followed by the host of URL.
	Origin string
}

// Run runs the conformance suite against the server described by cfg. Each
// case is a subtest of t, "section/case"; cases of a section run in
// parallel, each on its own connection. Run returns when every case has
// finished, so the caller may stop the server right after it.
//
// Before the cases, Run checks that an echo works at all, and stops with
// one clear failure if not.
func Run(t *testing.T, cfg Config) {
	t.Helper()
	s, err := newSuite(cfg)
	if err != nil {
		t.Fatalf("conformance: %v", err)
	}
	s.preflight(t)
	for _, sec := range s.sections() {
		t.Run(sec.name, func(t *testing.T) {
			for _, tc := range sec.cases {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.run(t)
				})
			}
		})
	}
}

// testCase is one conformance check; it runs on its own connection.
type testCase struct {
	name string
	run  func(t *testing.T)
}

// section is a group of cases, one subtest level.
type section struct {
	name  string
	cases []testCase
}

// sections lists every section, in the order of the Autobahn|Testsuite
// where one exists.
func (s *suite) sections() []section {
	return []section{
		{"handshake", s.handshakeCases()},
		{"framing", s.framingCases()},
		{"ping", s.pingCases()},
		{"rsv", s.rsvCases()},
		{"opcode", s.opcodeCases()},
		{"fragmentation", s.fragmentationCases()},
		{"utf8", s.utf8Cases()},
		{"close", s.closeCases()},
		{"limits", s.limitCases()},
		{"deflate", s.deflateCases()},
	}
}

// preflight checks that the server answers one echo, so an unreachable or
// misconfigured server fails once instead of in every case.
func (s *suite) preflight(t *testing.T) {
	t.Helper()
	c := s.dial(t)
	c.send(textFrame("conformance preflight"))
	c.expectText("conformance preflight")
	c.closeNormally()
}

// echoCase returns a case that sends wire, expects the echoes of msgs in
// order, and closes normally.
func (s *suite) echoCase(name string, wire []byte, chunk int, msgs ...wantMsg) testCase {
	return testCase{name, func(t *testing.T) {
		c := s.dial(t)
		c.sendChunks(wire, chunk)
		for _, m := range msgs {
			c.expectMessage(m.op, m.data)
		}
		c.closeNormally()
	}}
}

// failCase returns a case that sends wire (in writes of chunk bytes, or
// at once if chunk is 0), expects the echoes of msgs in order, and then a
// close frame with one of codes.
func (s *suite) failCase(name string, wire []byte, chunk int, codes []int, msgs ...wantMsg) testCase {
	return testCase{name, func(t *testing.T) {
		c := s.dial(t)
		c.sendChunks(wire, chunk)
		for _, m := range msgs {
			c.expectMessage(m.op, m.data)
		}
		c.expectClose(codes...)
	}}
}

// sized makes tc skip when a message of n bytes is over the server's
// limit.
func (s *suite) sized(n int, tc testCase) testCase {
	run := tc.run
	tc.run = func(t *testing.T) {
		s.needSize(t, n)
		run(t)
	}
	return tc
}

// wantMsg is an expected echo.
type wantMsg struct {
	op   byte
	data []byte
}

// text and binary build expected echoes.
func wantText(s string) wantMsg       { return wantMsg{opText, []byte(s)} }
func wantBinary(b []byte) wantMsg     { return wantMsg{opBinary, b} }
func msgOf(op byte, b []byte) wantMsg { return wantMsg{op, b} }

// Close codes the suite expects.
const (
	codeNormal      = 1000
	codeProtocol    = 1002
	codeInvalidData = 1007
	codeTooBig      = 1009
)

// protocolError is the code list for cases that must fail with 1002.
var protocolError = []int{codeProtocol}

// textPayload returns n bytes of printable ASCII, so it is valid UTF-8.
func textPayload(n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ."
	b := bytes.Repeat([]byte(alphabet), n/len(alphabet)+1)
	return b[:n]
}

// binaryPayload returns n pseudo-random bytes; the same seed gives the
// same bytes.
func binaryPayload(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// payloadFor returns n payload bytes fit for a message of type op.
func payloadFor(op byte, n int) []byte {
	if op == opText {
		return textPayload(n)
	}
	return binaryPayload(n, uint64(n))
}
