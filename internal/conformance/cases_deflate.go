package conformance

import (
	"bytes"
	"compress/flate"
	"fmt"
	"testing"
)

// defaultOffer is what browsers offer: the client may be asked to use a
// smaller window.
const defaultOffer = "permessage-deflate; client_max_window_bits"

// deflateCases checks permessage-deflate (RFC 7692; Autobahn sections 12
// and 13) when the server has it enabled, or that the server declines it
// when not.
func (s *suite) deflateCases() []testCase {
	if !s.cfg.Compression {
		return s.noDeflateCases()
	}
	var cs []testCase
	cs = append(cs, s.offerCases()...)
	cs = append(cs, s.badOfferCases()...)
	cs = append(cs, s.compressedEchoCases()...)
	cs = append(cs, s.compressedFailCases()...)
	return cs
}

// dialPMD dials with offer and requires the server to accept it.
func (s *suite) dialPMD(t *testing.T, offer string) *conn {
	t.Helper()
	c := s.dialOffer(t, offer)
	if c.pmd == nil {
		t.Fatalf("the server declined the offer %q, but Config.Compression says permessage-deflate is enabled", offer)
	}
	return c
}

// sendCompressed sends p as a message of type op compressed by comp, in
// fragments of fragSize bytes of compressed data (one frame if 0).
func (c *conn) sendCompressed(comp *compressor, op byte, p []byte, fragSize int) {
	c.send(fragments(op, rsv1, comp.compress(p), fragSize))
}

// offerCases checks that legal offers get legal responses (RFC 7692
// section 7.1) and that the result works.
func (s *suite) offerCases() []testCase {
	negotiate := func(name, offer string, mustAccept bool) testCase {
		return testCase{"offer/" + name, func(t *testing.T) {
			c := s.dialOffer(t, offer)
			if c.pmd == nil {
				if mustAccept {
					t.Fatalf("the server declined the offer %q, but Config.Compression says permessage-deflate is enabled", offer)
				}
				t.Logf("offer %q declined", offer)
				c.send(textFrame("declined"))
				c.expectText("declined")
				c.closeNormally()
				return
			}
			t.Logf("offer %q, response %q", offer, c.resp.Header.Values("Sec-WebSocket-Extensions"))
			comp := c.newCompressor(flate.DefaultCompression)
			p := bytes.Repeat([]byte("Hello, compressed world! "), 100)
			for range 3 {
				c.sendCompressed(comp, opText, p, 0)
				c.expectMessage(opText, p)
			}
			c.closeNormally()
		}}
	}
	cs := []testCase{
		negotiate("plain", "permessage-deflate", true),
		negotiate("client_max_window_bits", defaultOffer, true),
		negotiate("server_no_context_takeover", "permessage-deflate; server_no_context_takeover", false),
		negotiate("client_no_context_takeover", "permessage-deflate; client_no_context_takeover", false),
		negotiate("both_no_context_takeover", "permessage-deflate; server_no_context_takeover; client_no_context_takeover", false),
	}
	for bits := 8; bits <= 15; bits++ {
		cs = append(cs, negotiate(fmt.Sprintf("server_max_window_bits=%d", bits),
			fmt.Sprintf("permessage-deflate; server_max_window_bits=%d", bits), false))
	}
	for bits := 8; bits <= 15; bits++ {
		cs = append(cs, negotiate(fmt.Sprintf("client_max_window_bits=%d", bits),
			fmt.Sprintf("permessage-deflate; client_max_window_bits=%d", bits), false))
	}
	cs = append(cs,
		negotiate("all-parameters", "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits", false),
		negotiate("quoted-value", `permessage-deflate; server_max_window_bits="10"`, false),
		negotiate("extra-whitespace", "permessage-deflate ;  client_max_window_bits ; server_no_context_takeover", false),
		negotiate("two-offers", "permessage-deflate; server_max_window_bits=10; client_max_window_bits, permessage-deflate", false),
		negotiate("bad-offer-then-good", "permessage-deflate; x-unknown=1, permessage-deflate; client_max_window_bits", false),
		negotiate("unknown-extension-first", "x-webkit-unknown, permessage-deflate; client_max_window_bits", false),
	)
	return cs
}

// badOffers are permessage-deflate offers a server must decline (RFC 7692
// section 5.1): unknown parameters, invalid values, duplicates.
var badOffers = []struct{ name, offer string }{
	{"unknown-parameter", "permessage-deflate; foo"},
	{"unknown-parameter-with-value", "permessage-deflate; foo=bar"},
	{"duplicate-server_no_context_takeover", "permessage-deflate; server_no_context_takeover; server_no_context_takeover"},
	{"duplicate-client_no_context_takeover", "permessage-deflate; client_no_context_takeover; client_no_context_takeover"},
	{"duplicate-server_max_window_bits", "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10"},
	{"duplicate-client_max_window_bits", "permessage-deflate; client_max_window_bits; client_max_window_bits=10"},
	{"server_max_window_bits=7", "permessage-deflate; server_max_window_bits=7"},
	{"server_max_window_bits=16", "permessage-deflate; server_max_window_bits=16"},
	{"server_max_window_bits=abc", "permessage-deflate; server_max_window_bits=abc"},
	{"server_max_window_bits=08", "permessage-deflate; server_max_window_bits=08"},
	{"server_max_window_bits-without-value", "permessage-deflate; server_max_window_bits"},
	{"client_max_window_bits=7", "permessage-deflate; client_max_window_bits=7"},
	{"client_max_window_bits=16", "permessage-deflate; client_max_window_bits=16"},
	{"client_max_window_bits=abc", "permessage-deflate; client_max_window_bits=abc"},
	{"server_no_context_takeover=1", "permessage-deflate; server_no_context_takeover=1"},
	{"client_no_context_takeover=true", "permessage-deflate; client_no_context_takeover=true"},
}

// badOfferCases checks that invalid offers are declined or the handshake
// fails with 400, and never accepted.
func (s *suite) badOfferCases() []testCase {
	var cs []testCase
	for _, bo := range badOffers {
		cs = append(cs, testCase{"bad-offer/" + bo.name, func(t *testing.T) {
			req := s.newRequest()
			req.set("Sec-WebSocket-Extensions", bo.offer)
			nc, br, resp := s.upgrade(t, req)
			switch resp.StatusCode {
			case 400:
				t.Logf("offer %q: handshake refused with %q", bo.offer, resp.Status)
				return
			case 101:
			default:
				t.Fatalf("offer %q: want 101 without the extension, or 400; got %q", bo.offer, resp.Status)
			}
			if err := checkSwitch(req.get("Sec-WebSocket-Key"), resp); err != nil {
				t.Fatal(err)
			}
			if ext := resp.Header.Values("Sec-WebSocket-Extensions"); len(ext) > 0 {
				t.Fatalf("the server accepted the invalid offer %q with %q; it must decline it (RFC 7692 section 5.1)", bo.offer, ext)
			}
			c := newConn(t, s, nc, br, resp)
			c.send(textFrame("declined"))
			c.expectText("declined")
			c.closeNormally()
		}})
	}
	return cs
}

// compressedEchoCases checks compressed messages that must be echoed.
func (s *suite) compressedEchoCases() []testCase {
	// echo sends each message compressed, in fragments of fragSize bytes,
	// and expects it back.
	echo := func(name, offer string, level, fragSize int, msgs ...wantMsg) testCase {
		return testCase{name, func(t *testing.T) {
			c := s.dialPMD(t, offer)
			comp := c.newCompressor(level)
			for _, m := range msgs {
				c.sendCompressed(comp, m.op, m.data, fragSize)
				c.expectMessage(m.op, m.data)
			}
			c.closeNormally()
		}}
	}
	noTakeover := "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
	repeated := func(n int, m wantMsg) []wantMsg {
		out := make([]wantMsg, n)
		for i := range out {
			out[i] = m
		}
		return out
	}
	hello := wantText("Hello, compressed world!")
	big := min(1<<20, s.large)
	cs := []testCase{
		echo("echo/text/len=0", defaultOffer, flate.DefaultCompression, 0, wantText("")),
		echo("echo/binary/len=0", defaultOffer, flate.DefaultCompression, 0, wantBinary(nil)),
		echo("echo/text/short", defaultOffer, flate.DefaultCompression, 0, hello),
		echo("echo/text/kosme", defaultOffer, flate.DefaultCompression, 0, wantText(kosme+" "+kosme+" "+kosme)),
		s.sized(16<<10, echo("echo/text/16KiB", defaultOffer, flate.DefaultCompression, 0, msgOf(opText, textPayload(16<<10)))),
		s.sized(64<<10, echo("echo/binary/64KiB-random", defaultOffer, flate.DefaultCompression, 0, wantBinary(binaryPayload(64<<10, 64)))),
		echo(fmt.Sprintf("echo/binary/%d-zero-bytes", big), defaultOffer, flate.DefaultCompression, 0, wantBinary(make([]byte, big))),
		echo("echo/stored-blocks", defaultOffer, flate.NoCompression, 0, hello, hello),
		echo("echo/huffman-only", defaultOffer, flate.HuffmanOnly, 0, hello, hello),
		echo("echo/no-context-takeover", noTakeover, flate.DefaultCompression, 0, repeated(10, hello)...),
		testCase{"echo/context-takeover", func(t *testing.T) {
			c := s.dialPMD(t, "permessage-deflate")
			if c.pmd.clientNoContextTakeover {
				t.Skipf("the server answered with client_no_context_takeover (%q); the client may not use context takeover",
					c.resp.Header.Values("Sec-WebSocket-Extensions"))
			}
			comp := c.newCompressor(flate.DefaultCompression)
			p := textPayload(1024)
			first := comp.compress(p)
			second := comp.compress(p)
			if len(second) >= len(first)/2 {
				t.Fatalf("conformance: the suite's compressor did not use its context (%d then %d bytes)", len(first), len(second))
			}
			c.send(cat(rawFrame(true, rsv1, opText, first), rawFrame(true, rsv1, opText, second)))
			c.expectMessage(opText, p)
			c.expectMessage(opText, p)
			for range 8 {
				c.sendCompressed(comp, opText, p, 0)
				c.expectMessage(opText, p)
			}
			c.closeNormally()
		}},
		testCase{"echo/mixed-compressed-and-not", func(t *testing.T) {
			c := s.dialPMD(t, defaultOffer)
			comp := c.newCompressor(flate.DefaultCompression)
			c.sendCompressed(comp, opText, []byte("compressed one"), 0)
			c.expectText("compressed one")
			c.send(textFrame("plain"))
			c.expectText("plain")
			c.send(binaryFrame([]byte{1, 2, 3}))
			c.expectMessage(opBinary, []byte{1, 2, 3})
			c.sendCompressed(comp, opText, []byte("compressed two"), 0)
			c.expectText("compressed two")
			c.closeNormally()
		}},
		testCase{"echo/bfinal-block", func(t *testing.T) {
			c := s.dialPMD(t, noTakeover)
			p := []byte("a message ending in a DEFLATE block with BFINAL set")
			c.send(rawFrame(true, rsv1, opText, compressFinal(p)))
			c.expectMessage(opText, p)
			c.closeNormally()
		}},
		testCase{"fragmented/2-frames", func(t *testing.T) {
			c := s.dialPMD(t, defaultOffer)
			comp := c.newCompressor(flate.DefaultCompression)
			p := textPayload(4096)
			z := comp.compress(p)
			c.send(cat(rawFrame(false, rsv1, opText, z[:len(z)/2]), rawFrame(true, 0, opContinuation, z[len(z)/2:])))
			c.expectMessage(opText, p)
			c.closeNormally()
		}},
		echo("fragmented/1-byte-frames", defaultOffer, flate.DefaultCompression, 1, hello, msgOf(opBinary, binaryPayload(300, 3))),
		testCase{"fragmented/empty-first-frame", func(t *testing.T) {
			c := s.dialPMD(t, defaultOffer)
			comp := c.newCompressor(flate.DefaultCompression)
			c.send(cat(rawFrame(false, rsv1, opText, nil), rawFrame(true, 0, opContinuation, comp.compress([]byte("after an empty frame")))))
			c.expectText("after an empty frame")
			c.closeNormally()
		}},
		testCase{"fragmented/ping-in-middle", func(t *testing.T) {
			c := s.dialPMD(t, defaultOffer)
			comp := c.newCompressor(flate.DefaultCompression)
			z := comp.compress([]byte("Hello, fragmented compressed world!"))
			c.send(cat(rawFrame(false, rsv1, opText, z[:3]), pingFrame([]byte("middle")), rawFrame(true, 0, opContinuation, z[3:])))
			c.expectPong([]byte("middle"))
			c.expectText("Hello, fragmented compressed world!")
			c.closeNormally()
		}},
		testCase{"max-size", func(t *testing.T) {
			c := s.dialPMD(t, defaultOffer)
			p := textPayload(s.large)
			c.sendCompressed(c.newCompressor(flate.BestSpeed), opText, p, 0)
			c.expectMessage(opText, p)
			c.closeNormally()
		}},
	}
	return cs
}

// compressedFailCases checks what a server with permessage-deflate must
// refuse.
func (s *suite) compressedFailCases() []testCase {
	// fail dials with defaultOffer, sends what build returns followed by
	// a ping, and expects a close with one of codes. The ping makes a
	// server that wrongly accepts the frame answer at once, with a pong,
	// instead of leaving the case to time out.
	fail := func(name string, codes []int, build func(c *conn) []byte) testCase {
		return testCase{name, func(t *testing.T) {
			c := s.dialPMD(t, defaultOffer)
			c.send(cat(build(c), pingFrame([]byte("too late"))))
			c.expectClose(codes...)
		}}
	}
	z := func(c *conn, p string) []byte { return c.newCompressor(flate.DefaultCompression).compress([]byte(p)) }
	return []testCase{
		fail("rsv1-on-continuation", protocolError, func(c *conn) []byte {
			b := z(c, "Hello, compressed world!")
			return cat(rawFrame(false, rsv1, opText, b[:2]), rawFrame(true, rsv1, opContinuation, b[2:]))
		}),
		fail("rsv1-on-continuation-of-uncompressed", protocolError, func(c *conn) []byte {
			return cat(rawFrame(false, 0, opText, []byte("plain ")), rawFrame(true, rsv1, opContinuation, z(c, "compressed")))
		}),
		fail("rsv1-on-ping", protocolError, func(c *conn) []byte { return rawFrame(true, rsv1, opPing, []byte("ping")) }),
		fail("rsv1-on-pong", protocolError, func(c *conn) []byte { return rawFrame(true, rsv1, opPong, []byte("pong")) }),
		testCase{"rsv1-on-close", func(t *testing.T) {
			c := s.dialPMD(t, defaultOffer)
			c.closeSent = closeInvalid
			c.send(rawFrame(true, rsv1, opClose, []byte{0x03, 0xE8}))
			c.expectClose(codeProtocol)
		}},
		fail("rsv2-on-compressed", protocolError, func(c *conn) []byte { return rawFrame(true, rsv1|rsv2, opText, z(c, "rsv2")) }),
		fail("rsv3-on-compressed", protocolError, func(c *conn) []byte { return rawFrame(true, rsv1|rsv3, opText, z(c, "rsv3")) }),
		fail("invalid-deflate-data", []int{codeProtocol, codeInvalidData}, func(c *conn) []byte {
			return rawFrame(true, rsv1, opBinary, []byte{0xFF, 0xFF, 0xFF, 0xFF})
		}),
		fail("compressed-invalid-utf8", []int{codeInvalidData}, func(c *conn) []byte {
			return rawFrame(true, rsv1, opText, z(c, kosme+"\xed\xa0\x80edited"))
		}),
		testCase{"max-size+1", func(t *testing.T) {
			limit := s.cfg.MaxMessageSize
			if limit > 4*maxLarge {
				t.Skipf("MaxMessageSize %d is over the %d bytes the suite inflates to", limit, 4*maxLarge)
			}
			c := s.dialPMD(t, defaultOffer)
			// A small frame that inflates to one byte more than the limit.
			c.send(rawFrame(true, rsv1, opBinary, c.newCompressor(flate.BestSpeed).compress(make([]byte, limit+1))))
			c.expectClose(codeTooBig)
		}},
	}
}

// noDeflateCases checks a server without permessage-deflate: it declines
// offers and refuses RSV1.
func (s *suite) noDeflateCases() []testCase {
	declined := func(name, offer string) testCase {
		return testCase{name, func(t *testing.T) {
			c := s.dialOffer(t, offer)
			if c.pmd != nil {
				t.Fatalf("the server accepted %q, but Config.Compression says permessage-deflate is disabled", c.resp.Header.Values("Sec-WebSocket-Extensions"))
			}
			c.send(textFrame("declined"))
			c.expectText("declined")
			c.closeNormally()
		}}
	}
	return []testCase{
		declined("declined/plain", "permessage-deflate"),
		declined("declined/client_max_window_bits", defaultOffer),
		testCase{"declined/rsv1-refused", func(t *testing.T) {
			c := s.dialOffer(t, defaultOffer)
			c.send(rawFrame(true, rsv1, opText, compressOnce([]byte("compressed anyway"), flate.DefaultCompression)))
			c.expectClose(codeProtocol)
		}},
	}
}
