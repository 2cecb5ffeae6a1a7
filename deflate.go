package wsgate

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
)

// permessage-deflate (RFC 7692).

const deflateName = "permessage-deflate"

// deflateParams are the negotiated extension parameters.
type deflateParams struct {
	serverNoContext bool
	clientNoContext bool
	serverMaxBits   int // 0 when absent
	clientMaxBits   int // 0 when absent; -1 for "client_max_window_bits" without a value
}

// parseDeflateOffer parses one extension element's parameters. It reports
// false when a parameter is unknown, repeated or has a bad value.
func parseDeflateOffer(params []string) (deflateParams, bool) {
	var p deflateParams
	seen := map[string]bool{}
	for _, kv := range params {
		k, v, hasV := strings.Cut(kv, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.Trim(strings.TrimSpace(v), `"`)
		if seen[k] {
			return p, false
		}
		seen[k] = true
		switch k {
		case "server_no_context_takeover":
			if hasV {
				return p, false
			}
			p.serverNoContext = true
		case "client_no_context_takeover":
			if hasV {
				return p, false
			}
			p.clientNoContext = true
		case "server_max_window_bits":
			b, ok := windowBits(v)
			if !hasV || !ok {
				return p, false
			}
			p.serverMaxBits = b
		case "client_max_window_bits":
			if !hasV {
				p.clientMaxBits = -1
				continue
			}
			b, ok := windowBits(v)
			if !ok {
				return p, false
			}
			p.clientMaxBits = b
		default:
			return p, false
		}
	}
	return p, true
}

func windowBits(v string) (int, bool) {
	if len(v) == 0 || len(v) > 2 || v[0] == '0' {
		return 0, false
	}
	b, err := strconv.Atoi(v)
	if err != nil || b < 8 || b > 15 {
		return 0, false
	}
	return b, true
}

// extensionOffers splits Sec-WebSocket-Extensions header values into
// elements, each a name and its parameters.
func extensionOffers(values []string) [][]string {
	var out [][]string
	for _, v := range values {
		for _, elem := range splitOutsideQuotes(v, ',') {
			parts := splitOutsideQuotes(elem, ';')
			for i := range parts {
				parts[i] = strings.TrimSpace(parts[i])
			}
			if len(parts) == 0 || parts[0] == "" {
				continue
			}
			out = append(out, parts)
		}
	}
	return out
}

func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	quoted := false
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case sep:
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// acceptDeflate picks the first acceptable permessage-deflate offer and
// returns the response element. The server always answers with
// server_no_context_takeover, so its compressors can be pooled instead of
// held per connection; it follows a client's window limit by compressing
// without back-references (Huffman only), which is valid for any window.
// Unless clientTakeover, it also asks the client for
// client_no_context_takeover (RFC 7692 section 7.1.1.2 lets it, offered or
// not), so that it keeps no 32 KiB inflate window per connection.
func acceptDeflate(values []string, clientTakeover bool) (string, *deflateParams) {
	for _, offer := range extensionOffers(values) {
		if !strings.EqualFold(offer[0], deflateName) {
			continue
		}
		p, ok := parseDeflateOffer(offer[1:])
		if !ok {
			continue
		}
		p.serverNoContext = true
		if !clientTakeover {
			p.clientNoContext = true
		}
		resp := deflateName + "; server_no_context_takeover"
		if p.clientNoContext {
			resp += "; client_no_context_takeover"
		}
		if p.serverMaxBits != 0 {
			resp += "; server_max_window_bits=" + strconv.Itoa(p.serverMaxBits)
		}
		if p.clientMaxBits > 0 {
			resp += "; client_max_window_bits=" + strconv.Itoa(p.clientMaxBits)
		}
		return resp, &p
	}
	return "", nil
}

// clientDeflateOffer is what Dial offers: no context takeover either way,
// so neither side keeps compression state between messages.
const clientDeflateOffer = deflateName + "; server_no_context_takeover; client_no_context_takeover"

// checkDeflateResponse validates the server's answer to clientDeflateOffer.
func checkDeflateResponse(values []string) (*deflateParams, error) {
	offers := extensionOffers(values)
	if len(offers) == 0 {
		return nil, nil
	}
	if len(offers) > 1 || !strings.EqualFold(offers[0][0], deflateName) {
		return nil, errors.New("server accepted an extension that was not offered")
	}
	p, ok := parseDeflateOffer(offers[0][1:])
	if !ok || p.clientMaxBits == -1 {
		return nil, errors.New("invalid permessage-deflate response")
	}
	return &p, nil
}

// deflater compresses and decompresses one connection's messages.
type deflater struct {
	huffmanOnly bool   // our window is limited below 32 KiB
	inTakeover  bool   // the peer keeps its LZ77 window across messages
	dict        []byte // last 32 KiB of inflated output, when inTakeover
}

func newDeflater(p deflateParams, server bool) *deflater {
	d := &deflater{}
	if server {
		d.huffmanOnly = p.serverMaxBits != 0 && p.serverMaxBits < 15
		d.inTakeover = !p.clientNoContext
	} else {
		d.huffmanOnly = p.clientMaxBits > 0 && p.clientMaxBits < 15
		d.inTakeover = !p.serverNoContext
	}
	return d
}

var (
	fastWriters    sync.Pool // *compressor, BestSpeed
	huffmanWriters sync.Pool // *compressor, HuffmanOnly
	inflaters      sync.Pool // *inflater, each with its flate reader
)

type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// compressor is a pooled flate writer with the buffer it appends to, so
// compressing a message allocates nothing.
type compressor struct {
	w  appendWriter
	fw *flate.Writer // writes to w
}

// compress appends p's compressed form, without the trailing
// 0x00 0x00 0xff 0xff, to dst.
func (d *deflater) compress(dst, p []byte) []byte {
	pool, level := &fastWriters, flate.BestSpeed
	if d.huffmanOnly {
		pool, level = &huffmanWriters, flate.HuffmanOnly
	}
	z, _ := pool.Get().(*compressor)
	if z == nil {
		z = &compressor{}
		z.fw, _ = flate.NewWriter(&z.w, level)
	} else {
		z.fw.Reset(&z.w) // no context from the previous message
	}
	z.w.b = dst
	z.fw.Write(p)
	z.fw.Flush()
	out := z.w.b
	z.w.b = nil
	pool.Put(z)
	if bytes.HasSuffix(out[len(dst):], []byte{0, 0, 0xff, 0xff}) {
		out = out[:len(out)-4]
	}
	return out
}

var errInflateTooBig = errors.New("inflated message too big")

// deflateTail restores the removed sync marker and ends the stream with an
// empty final block, so the reader stops cleanly.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

// inflater inflates one message, possibly in several steps. Its output
// grows in buffers from the frame pools (getOut): whoever takes the
// message gives the buffer back (putOut) or copies it. Inflaters are
// pooled with their flate readers, so receiving a compressed message
// allocates nothing.
type inflater struct {
	fr    io.ReadCloser // implements flate.Resetter; reads src
	src   inflateSource
	op    byte
	limit int64 // -1: none
	out   []byte
}

// inflateSource feeds a compressed payload and then deflateTail to the
// flate reader. It is an io.ByteReader, so that the reader takes it as it
// is instead of wrapping it in a new bufio.Reader for every message.
type inflateSource struct {
	p    []byte
	tail int // bytes of deflateTail already read
}

func (s *inflateSource) Read(b []byte) (int, error) {
	if len(s.p) > 0 {
		n := copy(b, s.p)
		s.p = s.p[n:]
		return n, nil
	}
	if s.tail == len(deflateTail) {
		return 0, io.EOF
	}
	n := copy(b, deflateTail[s.tail:])
	s.tail += n
	return n, nil
}

func (s *inflateSource) ReadByte() (byte, error) {
	if len(s.p) > 0 {
		b := s.p[0]
		s.p = s.p[1:]
		return b, nil
	}
	if s.tail == len(deflateTail) {
		return 0, io.EOF
	}
	b := deflateTail[s.tail]
	s.tail++
	return b, nil
}

// exhaustedSource is what a pooled flate reader points at: it only ever
// reports io.EOF, so it is never written and may be shared.
var exhaustedSource = &inflateSource{tail: len(deflateTail)}

// startInflate prepares to inflate the compressed payload p of a message
// with opcode op, at most limit bytes (-1: no limit). p must stay unchanged
// until the inflater is closed.
func (d *deflater) startInflate(p []byte, op byte, limit int64) *inflater {
	in, _ := inflaters.Get().(*inflater)
	if in == nil {
		in = &inflater{src: inflateSource{p: p}}
		in.fr = flate.NewReaderDict(&in.src, d.dict)
	} else {
		in.src = inflateSource{p: p}
		in.fr.(flate.Resetter).Reset(&in.src, d.dict)
	}
	in.op, in.limit, in.out = op, limit, nil
	return in
}

// step inflates at most quota more bytes (all of them when quota < 0),
// growing out and charging c's budget for it. It reports whether the
// message is complete; err is errInflateTooBig over the limit, or the
// stream's error.
func (in *inflater) step(c *Conn, quota int) (done bool, err error) {
	produced := 0
	for quota < 0 || produced < quota {
		if len(in.out) == cap(in.out) {
			n := max(2*cap(in.out), outSmallSize)
			if in.limit >= 0 {
				n = int(min(int64(n), in.limit+1))
				if n <= len(in.out) {
					return true, errInflateTooBig
				}
			}
			nb := getOut(n)[:len(in.out)]
			copy(nb, in.out)
			c.charge(int64(cap(nb) - cap(in.out)))
			putOut(in.out)
			in.out = nb
		}
		k, rerr := in.fr.Read(in.out[len(in.out):cap(in.out)])
		in.out = in.out[:len(in.out)+k]
		produced += k
		if in.limit >= 0 && int64(len(in.out)) > in.limit {
			return true, errInflateTooBig
		}
		if rerr == io.EOF {
			return true, nil
		}
		if rerr != nil {
			return true, rerr
		}
	}
	return false, nil
}

// close gives the inflater back to its pool, without its output: the
// caller takes in.out first. in must not be used after.
func (in *inflater) close() {
	in.fr.(flate.Resetter).Reset(exhaustedSource, nil) // drops the payload and the dictionary
	in.src = inflateSource{}
	in.out = nil
	inflaters.Put(in)
}

// discard gives the inflater and its output buffer back: for a message
// that is abandoned.
func (in *inflater) discard() {
	putOut(in.out)
	in.close()
}

// remember keeps the end of an inflated message as the dictionary of the
// next one when the peer keeps its compression context.
func (d *deflater) remember(c *Conn, b []byte) {
	if !d.inTakeover {
		return
	}
	const window = 32 << 10
	old := cap(d.dict)
	if len(b) >= window {
		d.dict = append(d.dict[:0], b[len(b)-window:]...)
	} else {
		d.dict = append(d.dict, b...)
		if len(d.dict) > window {
			d.dict = d.dict[:copy(d.dict, d.dict[len(d.dict)-window:])]
		}
	}
	c.charge(int64(cap(d.dict) - old))
}
