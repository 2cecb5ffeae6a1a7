package conformance

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// The framing examples of RFC 6455 section 5.7.
func TestFrameEncodeRFCExamples(t *testing.T) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	tests := []struct {
		name string
		f    frame
		want string
	}{
		{"unmasked text", frame{fin: true, opcode: opText, payload: []byte("Hello")}, "810548656c6c6f"},
		{"masked text", frame{fin: true, opcode: opText, masked: true, key: key, payload: []byte("Hello")}, "818537fa213d7f9f4d5158"},
		{"first fragment", frame{opcode: opText, payload: []byte("Hel")}, "010348656c"},
		{"last fragment", frame{fin: true, opcode: opContinuation, payload: []byte("lo")}, "80026c6f"},
		{"unmasked ping", frame{fin: true, opcode: opPing, payload: []byte("Hello")}, "890548656c6c6f"},
		{"masked pong", frame{fin: true, opcode: opPong, masked: true, key: key, payload: []byte("Hello")}, "8a8537fa213d7f9f4d5158"},
	}
	for _, tt := range tests {
		if got := hex.EncodeToString(tt.f.encode()); got != tt.want {
			t.Errorf("%s: encode = %s, want %s", tt.name, got, tt.want)
		}
	}
	// 256 and 65536 bytes: 16-bit and 64-bit lengths.
	if got := hex.EncodeToString(frame{fin: true, opcode: opBinary, payload: make([]byte, 256)}.encode()[:4]); got != "827e0100" {
		t.Errorf("256-byte header = %s, want 827e0100", got)
	}
	if got := hex.EncodeToString(frame{fin: true, opcode: opBinary, payload: make([]byte, 65536)}.encode()[:10]); got != "827f0000000000010000" {
		t.Errorf("64 KiB header = %s, want 827f0000000000010000", got)
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		for _, masked := range []bool{false, true} {
			in := frame{fin: n%2 == 0, rsv: rsv1 | rsv3, opcode: opBinary, masked: masked, key: randomKey(), payload: binaryPayload(n, uint64(n))}
			wire := in.encode()
			out, err := readFrame(bytes.NewReader(wire), 1<<20)
			if err != nil {
				t.Fatalf("len %d masked %v: %v", n, masked, err)
			}
			if out.fin != in.fin || out.rsv != in.rsv || out.opcode != in.opcode || out.masked != masked || !bytes.Equal(out.payload, in.payload) {
				t.Fatalf("len %d masked %v: round trip changed the frame", n, masked)
			}
			if masked && n > 8 && bytes.Contains(wire, in.payload[:8]) {
				t.Fatalf("len %d: payload appears unmasked on the wire", n)
			}
		}
	}
}

func TestReadFrameErrors(t *testing.T) {
	if _, err := readFrame(bytes.NewReader(nil), 100); err != io.EOF {
		t.Errorf("empty input: err = %v, want io.EOF", err)
	}
	whole := textFrame("Hello, world")
	for cut := 1; cut < len(whole); cut++ {
		if _, err := readFrame(bytes.NewReader(whole[:cut]), 100); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("frame cut at %d: err = %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}
	if _, err := readFrame(bytes.NewReader(binaryFrame(make([]byte, 101))), 100); !errors.Is(err, errFrameTooLarge) {
		t.Errorf("oversized frame: err = %v, want errFrameTooLarge", err)
	}
	msb := appendHeader(nil, true, 0, opBinary, false, [4]byte{}, 1<<63|1)
	if _, err := readFrame(bytes.NewReader(msb), 100); err == nil {
		t.Error("64-bit length with the top bit set: no error")
	}
}

func TestMaskBytes(t *testing.T) {
	key := [4]byte{0xde, 0xad, 0xbe, 0xef}
	naive := func(pos int, b []byte) []byte {
		out := bytes.Clone(b)
		for i := range out {
			out[i] ^= key[(pos+i)%4]
		}
		return out
	}
	for n := range 40 {
		for pos := range 4 {
			p := binaryPayload(n, uint64(n))
			got := bytes.Clone(p)
			next := maskBytes(key, pos, got)
			if want := naive(pos, p); !bytes.Equal(got, want) {
				t.Fatalf("n=%d pos=%d: got % x, want % x", n, pos, got, want)
			}
			if next != (pos+n)%4 {
				t.Fatalf("n=%d pos=%d: next position %d, want %d", n, pos, next, (pos+n)%4)
			}
		}
	}
	// Masking in pieces equals masking at once.
	p := binaryPayload(1000, 1)
	whole := bytes.Clone(p)
	maskBytes(key, 0, whole)
	pieces := bytes.Clone(p)
	pos := 0
	for i := 0; i < len(pieces); i += 7 {
		pos = maskBytes(key, pos, pieces[i:min(i+7, len(pieces))])
	}
	if !bytes.Equal(whole, pieces) {
		t.Fatal("masking in pieces differs from masking at once")
	}
}

// decodeAll reads every frame of wire.
func decodeAll(t *testing.T, wire []byte) []frame {
	t.Helper()
	var out []frame
	r := bytes.NewReader(wire)
	for r.Len() > 0 {
		f, err := readFrame(r, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !f.masked {
			t.Fatal("client frame is not masked")
		}
		out = append(out, f)
	}
	return out
}

func TestFragments(t *testing.T) {
	fs := decodeAll(t, fragments(opText, rsv1, []byte("abcdefg"), 3))
	if len(fs) != 3 {
		t.Fatalf("got %d frames, want 3", len(fs))
	}
	for i, f := range fs {
		wantOp, wantRsv := opContinuation, byte(0)
		if i == 0 {
			wantOp, wantRsv = opText, rsv1
		}
		if f.opcode != wantOp || f.rsv != wantRsv || f.fin != (i == 2) {
			t.Errorf("frame %d: opcode %d rsv %x fin %v", i, f.opcode, f.rsv, f.fin)
		}
	}
	if got := string(fs[0].payload) + string(fs[1].payload) + string(fs[2].payload); got != "abcdefg" {
		t.Errorf("payloads join to %q", got)
	}
	if fs := decodeAll(t, fragments(opBinary, 0, nil, 3)); len(fs) != 1 || !fs[0].fin || len(fs[0].payload) != 0 {
		t.Errorf("empty payload: got %d frames, want one empty final frame", len(fs))
	}
	fs = decodeAll(t, splitMessage(opBinary, nil, []byte{1}, nil))
	if len(fs) != 3 || fs[0].opcode != opBinary || fs[2].opcode != opContinuation || !fs[2].fin || fs[1].fin {
		t.Errorf("splitMessage: unexpected frames %+v", fs)
	}
	c := decodeAll(t, closeFrame(1002, "bye"))
	if len(c) != 1 || c[0].opcode != opClose || hex.EncodeToString(c[0].payload) != "03ea627965" {
		t.Errorf("closeFrame: %+v", c)
	}
}

func TestUTF8Vectors(t *testing.T) {
	for _, v := range validUTF8 {
		if !utf8.ValidString(v.text) {
			t.Errorf("valid vector %s is not valid UTF-8", v.name)
		}
	}
	for _, v := range invalidUTF8 {
		if utf8.ValidString(v.text) {
			t.Errorf("invalid vector %s is valid UTF-8", v.name)
		}
	}
	// A fail-fast vector must stay invalid however the message goes on:
	// its invalid sequence is complete, not a prefix of a valid one.
	for _, v := range failFastUTF8 {
		for _, more := range []string{"", "a", "\x80", "\x80\x80", "\x80\x80\x80", "\xbf\xbf\xbf"} {
			if utf8.ValidString(v.text + more) {
				t.Errorf("fail-fast vector %s becomes valid when followed by % x", v.name, more)
			}
		}
	}
	// The greeting of the Autobahn|Testsuite, byte for byte.
	if hex.EncodeToString([]byte(kosme)) != "cebae1bdb9cf83cebcceb5" {
		t.Error("kosme vector is not the expected byte sequence")
	}
}

func TestAcceptKey(t *testing.T) {
	// RFC 6455 section 1.3.
	if got := acceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("acceptKey = %q", got)
	}
}

func TestParseExtensions(t *testing.T) {
	tests := []struct {
		in   []string
		want string // extensions joined by ", ", or "error"
	}{
		{[]string{"permessage-deflate"}, "permessage-deflate"},
		{[]string{"permessage-deflate; client_max_window_bits"}, "permessage-deflate; client_max_window_bits"},
		{[]string{"permessage-deflate ;server_max_window_bits = 10 ; x"}, "permessage-deflate; server_max_window_bits=10; x"},
		{[]string{`permessage-deflate; server_max_window_bits="10"`}, "permessage-deflate; server_max_window_bits=10"},
		{[]string{`a; p="x\"y"`}, `a; p=x"y`},
		{[]string{"a, b; c=1", "d"}, "a, b; c=1, d"},
		{[]string{" , a,, "}, "a"},
		{[]string{""}, ""},
		{[]string{"a; "}, "error"},
		{[]string{"a; p="}, "error"},
		{[]string{`a; p="open`}, "error"},
		{[]string{"a b"}, "error"},
		{[]string{"; p"}, "error"},
	}
	for _, tt := range tests {
		exts, err := parseExtensions(tt.in)
		got := "error"
		if err == nil {
			parts := make([]string, len(exts))
			for i, e := range exts {
				parts[i] = e.String()
			}
			got = strings.Join(parts, ", ")
		}
		if got != tt.want {
			t.Errorf("parseExtensions(%q) = %q (err %v), want %q", tt.in, got, err, tt.want)
		}
	}
}

func mustExt(t *testing.T, s string) extension {
	t.Helper()
	exts, err := parseExtensions([]string{s})
	if err != nil || len(exts) != 1 {
		t.Fatalf("parse %q: %v %v", s, exts, err)
	}
	return exts[0]
}

func TestValidateOffer(t *testing.T) {
	for _, bo := range badOffers {
		if err := validateOffer(mustExt(t, bo.offer)); err == nil {
			t.Errorf("bad offer %s (%q) validates", bo.name, bo.offer)
		}
	}
	for _, ok := range []string{
		"permessage-deflate",
		"permessage-deflate; client_max_window_bits",
		"permessage-deflate; client_max_window_bits=8",
		"permessage-deflate; server_max_window_bits=15; client_no_context_takeover; server_no_context_takeover",
		`permessage-deflate; server_max_window_bits="10"`,
	} {
		if err := validateOffer(mustExt(t, ok)); err != nil {
			t.Errorf("valid offer %q: %v", ok, err)
		}
	}
}

func TestCheckResponse(t *testing.T) {
	tests := []struct {
		offer, resp string
		ok          bool
	}{
		{"permessage-deflate", "permessage-deflate", true},
		{"permessage-deflate", "permessage-deflate; server_no_context_takeover; client_no_context_takeover", true},
		{"permessage-deflate", "permessage-deflate; server_max_window_bits=10", true},
		{"permessage-deflate", "permessage-deflate; client_max_window_bits=10", false},
		{"permessage-deflate", "permessage-deflate; server_no_context_takeover=1", false},
		{"permessage-deflate", "permessage-deflate; server_no_context_takeover; server_no_context_takeover", false},
		{"permessage-deflate", "permessage-deflate; foo", false},
		{"permessage-deflate", "x-other", false},
		{"permessage-deflate; client_max_window_bits", "permessage-deflate; client_max_window_bits=9", true},
		{"permessage-deflate; client_max_window_bits", "permessage-deflate; client_max_window_bits", false},
		{"permessage-deflate; client_max_window_bits", "permessage-deflate; client_max_window_bits=16", false},
		{"permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10", true},
		{"permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=9", true},
		{"permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=11", false},
		{"permessage-deflate; server_max_window_bits=10", "permessage-deflate", false},
		{"permessage-deflate; server_no_context_takeover", "permessage-deflate", false},
		{"permessage-deflate; server_no_context_takeover", "permessage-deflate; server_no_context_takeover", true},
		{"permessage-deflate; client_no_context_takeover", "permessage-deflate", true},
		{"permessage-deflate", "permessage-deflate; server_max_window_bits=07", false},
	}
	for _, tt := range tests {
		_, err := checkResponse(mustExt(t, tt.offer), mustExt(t, tt.resp))
		if (err == nil) != tt.ok {
			t.Errorf("offer %q, response %q: err = %v, want ok = %v", tt.offer, tt.resp, err, tt.ok)
		}
	}
	p, err := checkResponse(mustExt(t, "permessage-deflate; client_max_window_bits=10; client_no_context_takeover"), mustExt(t, "permessage-deflate; client_max_window_bits=12; server_max_window_bits=9"))
	if err != nil {
		t.Fatal(err)
	}
	if p.clientMaxWindowBits != 10 || p.serverMaxWindowBits != 9 || !p.clientNoContextTakeover || p.serverNoContextTakeover {
		t.Errorf("negotiated %+v", p)
	}
}

func TestNegotiated(t *testing.T) {
	tests := []struct {
		offer string
		resp  []string
		want  string // "declined", "accepted" or "error"
	}{
		{"permessage-deflate", nil, "declined"},
		{"", []string{"permessage-deflate"}, "error"},
		{"permessage-deflate", []string{"permessage-deflate", "permessage-deflate"}, "error"},
		{"permessage-deflate; foo", []string{"permessage-deflate"}, "error"},
		{"permessage-deflate; foo, permessage-deflate", []string{"permessage-deflate"}, "accepted"},
		{"permessage-deflate; server_max_window_bits=10, permessage-deflate", []string{"permessage-deflate"}, "accepted"},
		{"x-other, permessage-deflate", []string{"x-other"}, "error"},
	}
	for _, tt := range tests {
		p, err := negotiated(tt.offer, tt.resp)
		got := "accepted"
		switch {
		case err != nil:
			got = "error"
		case p == nil:
			got = "declined"
		}
		if got != tt.want {
			t.Errorf("offer %q, response %q: %s (%v), want %s", tt.offer, tt.resp, got, err, tt.want)
		}
	}
}

// The examples of RFC 7692 section 7.2.3.
func TestDecompressRFCExamples(t *testing.T) {
	hello := []byte("Hello")
	unhex := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tt := range []struct{ name, payload string }{
		{"compressed", "f248cdc9c90700"},
		{"stored block", "000500faff48656c6c6f00"},
		{"bfinal block", "f348cdc9c907000000"},
	} {
		d := &decompressor{}
		got, err := d.decompress(unhex(tt.payload), 100)
		if err != nil || !bytes.Equal(got, hello) {
			t.Errorf("%s: got %q, %v", tt.name, got, err)
		}
	}
	// Two messages sharing the LZ77 window.
	d := &decompressor{takeover: true, window: 1 << 15}
	for i, p := range []string{"f248cdc9c90700", "f200110000"} {
		got, err := d.decompress(unhex(p), 100)
		if err != nil || !bytes.Equal(got, hello) {
			t.Errorf("context takeover message %d: got %q, %v", i, got, err)
		}
	}
	// An empty message compresses to a single 0x00.
	if got := compressOnce(nil, flate.DefaultCompression); !bytes.Equal(got, []byte{0}) {
		t.Errorf("empty message compresses to % x, want 00", got)
	}
}

func TestCompressorRoundTrip(t *testing.T) {
	msgs := [][]byte{textPayload(1000), textPayload(1000), nil, binaryPayload(5000, 5), []byte("Hello")}
	for _, takeover := range []bool{false, true} {
		for _, level := range []int{flate.DefaultCompression, flate.BestSpeed, flate.NoCompression, flate.HuffmanOnly} {
			c := newCompressor(level, takeover)
			d := &decompressor{takeover: takeover, window: 1 << 15}
			for i, m := range msgs {
				z := c.compress(m)
				got, err := d.decompress(z, 1<<20)
				if err != nil || !bytes.Equal(got, m) {
					t.Fatalf("takeover %v level %d message %d: round trip failed: %v", takeover, level, i, err)
				}
			}
		}
	}
	// With takeover a repeated message shrinks, and cannot be inflated
	// without the context.
	c := newCompressor(flate.DefaultCompression, true)
	first, second := c.compress(textPayload(1000)), c.compress(textPayload(1000))
	if len(second) >= len(first)/2 {
		t.Fatalf("context takeover did not shrink the repeat: %d then %d bytes", len(first), len(second))
	}
	got, err := (&decompressor{}).decompress(second, 1<<20)
	if err == nil && bytes.Equal(got, textPayload(1000)) {
		t.Fatal("a message that refers to the previous one inflated without its context")
	}
	// The limit is enforced.
	if _, err := (&decompressor{}).decompress(compressOnce(make([]byte, 1001), flate.BestSpeed), 1000); !errors.Is(err, errInflateTooLarge) {
		t.Fatalf("inflating past the limit: err = %v", err)
	}
	// A window smaller than the back-reference distance is detected.
	d := &decompressor{takeover: true, window: 256}
	c = newCompressor(flate.DefaultCompression, true)
	p := binaryPayload(1024, 9)
	if _, err := d.decompress(c.compress(p), 1<<20); err != nil {
		t.Fatal(err)
	}
	if got, err := d.decompress(c.compress(p), 1<<20); err == nil && bytes.Equal(got, p) {
		t.Fatal("a reference beyond the window inflated")
	}
	if got := compressFinal([]byte("final")); len(got) == 0 {
		t.Fatal("compressFinal produced nothing")
	}
}

func TestSendableCloseCode(t *testing.T) {
	for _, code := range validCloseCodes {
		if !sendableCloseCode(int(code)) {
			t.Errorf("valid code %d is not sendable", code)
		}
	}
	for _, code := range invalidCloseCodes {
		if sendableCloseCode(int(code)) {
			t.Errorf("invalid code %d is sendable", code)
		}
	}
}

// fakeServer is the far end of a net.Pipe, standing in for a server so
// that the client's reading and checking can be tested without one.
type fakeServer struct {
	nc net.Conn
	wg sync.WaitGroup
}

// newPipeConn returns a client conn wired to a fake server. The server
// writes the given frames (unmasked) from its own goroutine, then closes
// if closeAfter is set; whatever the client writes is read and dropped.
func newPipeConn(t testing.TB, pmd *pmdParams, closeAfter bool, frames ...frame) *conn {
	client, server := net.Pipe()
	s := &suite{readLimit: 1 << 20, large: 1 << 20, cfg: Config{MaxMessageSize: 1 << 20}}
	c := newConn(t, s, client, bufio.NewReader(client), &http.Response{})
	c.setPMD(pmd)
	fs := &fakeServer{nc: server}
	fs.wg.Add(2)
	go func() {
		defer fs.wg.Done()
		_, _ = io.Copy(io.Discard, server)
	}()
	go func() {
		defer fs.wg.Done()
		for _, f := range frames {
			if _, err := server.Write(f.encode()); err != nil {
				return
			}
		}
		if closeAfter {
			server.Close()
		}
	}()
	t.Cleanup(func() {
		server.Close()
		fs.wg.Wait()
	})
	return c
}

func srvFrame(fin bool, rsv, op byte, p string) frame {
	return frame{fin: fin, rsv: rsv, opcode: op, payload: []byte(p)}
}

func TestRecvAssemblesMessages(t *testing.T) {
	c := newPipeConn(t, nil, true,
		srvFrame(false, 0, opText, "Hel"),
		srvFrame(true, 0, opPing, "server ping"),
		srvFrame(true, 0, opPong, "pong"),
		srvFrame(true, 0, opContinuation, "lo"),
		srvFrame(true, 0, opBinary, "\xff"),
		srvFrame(true, 0, opClose, "\x03\xe8bye"),
	)
	want := []string{
		`pong (4 bytes: "pong")`,
		`text message (5 bytes: "Hello")`,
		`binary message (1 bytes: ff)`,
		`close frame with code 1000, reason "bye"`,
		`TCP connection closed by the server (FIN)`,
	}
	for _, w := range want {
		if got := c.recv(time.Second).String(); got != w {
			t.Errorf("got %s, want %s", got, w)
		}
	}
	if !strings.Contains(c.history(), "from the server, ignored") {
		t.Errorf("server ping not noted: %s", c.history())
	}
}

func TestRecvRejectsBadServerFrames(t *testing.T) {
	z := compressOnce([]byte("compressed"), flate.DefaultCompression)
	tests := []struct {
		name  string
		pmd   *pmdParams
		f     []frame
		want  string // substring of the error; "" means a message is fine
		label string
	}{
		{"masked", nil, []frame{{fin: true, opcode: opText, masked: true, payload: []byte("x")}}, "masked", ""},
		{"rsv1 without extension", nil, []frame{srvFrame(true, rsv1, opText, "x")}, "RSV1", ""},
		{"rsv2 with extension", &pmdParams{serverMaxWindowBits: 15, clientMaxWindowBits: 15}, []frame{srvFrame(true, rsv2, opText, "x")}, "RSV2", ""},
		{"rsv1 on continuation", &pmdParams{serverMaxWindowBits: 15, clientMaxWindowBits: 15}, []frame{srvFrame(false, 0, opText, "x"), srvFrame(true, rsv1, opContinuation, "y")}, "continuation", ""},
		{"reserved opcode", nil, []frame{srvFrame(true, 0, 3, "")}, "reserved opcode", ""},
		{"fragmented ping", nil, []frame{srvFrame(false, 0, opPing, "")}, "fragmented", ""},
		{"long pong", nil, []frame{srvFrame(true, 0, opPong, strings.Repeat("x", 126))}, "126-byte", ""},
		{"orphan continuation", nil, []frame{srvFrame(true, 0, opContinuation, "x")}, "no message in progress", ""},
		{"interrupted message", nil, []frame{srvFrame(false, 0, opText, "x"), srvFrame(true, 0, opText, "y")}, "before finishing", ""},
		{"invalid utf8", nil, []frame{srvFrame(true, 0, opText, "\xff")}, "not valid UTF-8", ""},
		{"1-byte close", nil, []frame{srvFrame(true, 0, opClose, "\x03")}, "1-byte", ""},
		{"close 1005", nil, []frame{srvFrame(true, 0, opClose, "\x03\xed")}, "1005", ""},
		{"close reason not utf8", nil, []frame{srvFrame(true, 0, opClose, "\x03\xe8\xff")}, "reason", ""},
		{"bad deflate data", &pmdParams{serverMaxWindowBits: 15, clientMaxWindowBits: 15}, []frame{srvFrame(true, rsv1, opBinary, "\xff\xff")}, "does not inflate", ""},
		{"compressed ok", &pmdParams{serverMaxWindowBits: 15, clientMaxWindowBits: 15}, []frame{{fin: true, rsv: rsv1, opcode: opText, payload: z}}, "", `compressed text message (10 bytes: "compressed")`},
	}
	for _, tt := range tests {
		c := newPipeConn(t, tt.pmd, false, tt.f...)
		ev := c.recv(time.Second)
		if tt.want == "" {
			if ev.String() != tt.label {
				t.Errorf("%s: got %s, want %s", tt.name, ev, tt.label)
			}
			continue
		}
		if ev.kind != evError || !strings.Contains(ev.err.Error(), tt.want) {
			t.Errorf("%s: got %s, want an error containing %q", tt.name, ev, tt.want)
		}
	}
}

func TestRecvTimeout(t *testing.T) {
	c := newPipeConn(t, nil, false)
	start := time.Now()
	ev := c.recv(50 * time.Millisecond)
	if ev.kind != evTimeout {
		t.Fatalf("got %s, want a timeout", ev)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("timeout took %v", d)
	}
	if again := c.recv(time.Hour); again.kind != evTimeout {
		t.Fatalf("after a timeout recv returned %s", again)
	}
}

// fatalRecorder is a testing.TB whose Fatal stops only the goroutine of
// the check under test and records the message.
type fatalRecorder struct {
	testing.TB
	mu  sync.Mutex
	msg string
}

func (r *fatalRecorder) Helper() {}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.msg = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *fatalRecorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// failure runs check against a fake server sending frames (then closing
// if closeAfter) and returns the failure message, or "" if it passed.
func failure(t *testing.T, closeAfter bool, check func(c *conn), frames ...frame) string {
	rec := &fatalRecorder{TB: t}
	c := newPipeConn(rec, nil, closeAfter, frames...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(c)
	}()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.msg
}

func TestExpectations(t *testing.T) {
	closeFr := srvFrame(true, 0, opClose, "\x03\xea")
	tests := []struct {
		name       string
		closeAfter bool
		check      func(c *conn)
		frames     []frame
		want       string // substring of the failure, "" for a pass
	}{
		{"echo ok", false, func(c *conn) { c.expectText("hi") }, []frame{srvFrame(true, 0, opText, "hi")}, ""},
		{"echo differs", false, func(c *conn) { c.expectText("hi") }, []frame{srvFrame(true, 0, opText, "ho")}, "first difference at byte 1"},
		{"echo wrong type", false, func(c *conn) { c.expectText("hi") }, []frame{srvFrame(true, 0, opBinary, "hi")}, "got binary message"},
		{"pong ok", false, func(c *conn) { c.expectPong([]byte("p")) }, []frame{srvFrame(true, 0, opPong, "p")}, ""},
		{"close then TCP close", true, func(c *conn) { c.expectClose(1002) }, []frame{closeFr}, ""},
		{"close with the wrong code", true, func(c *conn) { c.expectClose(1007) }, []frame{closeFr}, "want a close frame with code 1007; got close frame with code 1002"},
		{"echo instead of close", true, func(c *conn) { c.expectClose(1002) }, []frame{srvFrame(true, 0, opText, "oops"), closeFr}, `got text message (4 bytes: "oops")`},
		{"TCP kept open", false, func(c *conn) { c.expectClose(1002) }, []frame{closeFr}, "did not close the TCP connection within 1s"},
		{"frame after close", true, func(c *conn) { c.expectClose(1002) }, []frame{closeFr, srvFrame(true, 0, opText, "late")}, `sent text message (4 bytes: "late") after its close frame`},
		{"closed without close frame", true, func(c *conn) { c.expectClose(1002) }, nil, "got TCP connection closed by the server"},
	}
	for _, tt := range tests {
		got := failure(t, tt.closeAfter, tt.check, tt.frames...)
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("%s: failure %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestNewSuite(t *testing.T) {
	s, err := newSuite(Config{URL: "ws://127.0.0.1:9000/ws?x=1", MaxMessageSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if s.addr != "127.0.0.1:9000" || s.target != "/ws?x=1" || s.origin != "http://127.0.0.1:9000" || s.large != maxLarge {
		t.Errorf("suite %+v", s)
	}
	if s, _ := newSuite(Config{URL: "ws://example.test", MaxMessageSize: 1000}); s.addr != "example.test:80" || s.target != "/" || s.large != 1000 {
		t.Errorf("defaults: %+v", s)
	}
	for _, bad := range []Config{{URL: "http://x/ws", MaxMessageSize: 1}, {URL: "ws:///ws", MaxMessageSize: 1}, {URL: "ws://x/ws"}} {
		if _, err := newSuite(bad); err == nil {
			t.Errorf("config %+v accepted", bad)
		}
	}
	req := s.newRequest()
	req.set("sec-websocket-version", "8")
	req.del("Origin")
	wire := string(req.bytes())
	if !strings.HasPrefix(wire, "GET /ws?x=1 HTTP/1.1\r\n") || !strings.Contains(wire, "sec-websocket-version: 8\r\n") || strings.Contains(wire, "Origin") || !strings.HasSuffix(wire, "\r\n\r\n") {
		t.Errorf("request:\n%s", wire)
	}
}

func TestConnCompressorKeepsToNegotiation(t *testing.T) {
	c := newPipeConn(t, &pmdParams{serverMaxWindowBits: 15, clientMaxWindowBits: 10}, false)
	if comp := c.newCompressor(flate.DefaultCompression); comp.level != flate.HuffmanOnly || !comp.takeover {
		t.Errorf("window 10: level %d takeover %v, want Huffman-only with takeover", comp.level, comp.takeover)
	}
	if comp := c.newCompressor(flate.NoCompression); comp.level != flate.NoCompression {
		t.Errorf("stored blocks fit any window, but level became %d", comp.level)
	}
	c = newPipeConn(t, &pmdParams{serverMaxWindowBits: 12, clientMaxWindowBits: 15, clientNoContextTakeover: true, serverNoContextTakeover: true}, false)
	if comp := c.newCompressor(flate.BestSpeed); comp.level != flate.BestSpeed || comp.takeover {
		t.Errorf("no context takeover: level %d takeover %v", comp.level, comp.takeover)
	}
	if c.inflater.takeover || c.inflater.window != 1<<12 {
		t.Errorf("inflater %+v", c.inflater)
	}
}
