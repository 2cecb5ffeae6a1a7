package conformance

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// pmdName is the extension token of RFC 7692 permessage-deflate.
const pmdName = "permessage-deflate"

// Extension parameters of permessage-deflate (RFC 7692 section 7.1).
const (
	serverNoContextTakeover = "server_no_context_takeover"
	clientNoContextTakeover = "client_no_context_takeover"
	serverMaxWindowBits     = "server_max_window_bits"
	clientMaxWindowBits     = "client_max_window_bits"
)

// extParam is one extension parameter: name, or name=value.
type extParam struct {
	name     string
	value    string
	hasValue bool
}

// extension is one element of a Sec-WebSocket-Extensions list.
type extension struct {
	name   string
	params []extParam
}

// param returns the first parameter called name.
func (e extension) param(name string) (extParam, bool) {
	for _, p := range e.params {
		if p.name == name {
			return p, true
		}
	}
	return extParam{}, false
}

// String renders e in header syntax.
func (e extension) String() string {
	var b strings.Builder
	b.WriteString(e.name)
	for _, p := range e.params {
		b.WriteString("; ")
		b.WriteString(p.name)
		if p.hasValue {
			b.WriteString("=")
			b.WriteString(p.value)
		}
	}
	return b.String()
}

// parseExtensions parses the values of one or more Sec-WebSocket-Extensions
// header fields (RFC 6455 section 9.1): a comma-separated list of
// extensions, each a token followed by ";"-separated parameters whose
// values are tokens or quoted strings. Quoted values are returned
// unquoted. Empty list elements are skipped, as HTTP list syntax allows.
func parseExtensions(values []string) ([]extension, error) {
	var exts []extension
	for _, v := range values {
		p := extParser{s: v}
		for {
			p.space()
			if p.end() {
				break
			}
			if p.peek() == ',' {
				p.i++
				continue
			}
			name := p.token()
			if name == "" {
				return nil, fmt.Errorf("extension list %q: expected an extension token at offset %d", v, p.i)
			}
			ext := extension{name: name}
			for {
				p.space()
				if p.end() || p.peek() == ',' {
					break
				}
				if p.peek() != ';' {
					return nil, fmt.Errorf("extension list %q: unexpected %q at offset %d", v, p.peek(), p.i)
				}
				p.i++
				p.space()
				pn := p.token()
				if pn == "" {
					return nil, fmt.Errorf("extension list %q: expected a parameter name at offset %d", v, p.i)
				}
				prm := extParam{name: pn}
				p.space()
				if !p.end() && p.peek() == '=' {
					p.i++
					p.space()
					var err error
					if !p.end() && p.peek() == '"' {
						prm.value, err = p.quoted()
					} else {
						prm.value = p.token()
						if prm.value == "" {
							err = fmt.Errorf("extension list %q: parameter %s has an empty value", v, pn)
						}
					}
					if err != nil {
						return nil, err
					}
					prm.hasValue = true
				}
				ext.params = append(ext.params, prm)
			}
			exts = append(exts, ext)
		}
	}
	return exts, nil
}

// extParser is a cursor over one header value.
type extParser struct {
	s string
	i int
}

func (p *extParser) end() bool  { return p.i >= len(p.s) }
func (p *extParser) peek() byte { return p.s[p.i] }

func (p *extParser) space() {
	for !p.end() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

// token reads an HTTP token (RFC 9110 section 5.6.2).
func (p *extParser) token() string {
	start := p.i
	for !p.end() && isTokenChar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads a quoted-string and returns its unescaped content.
func (p *extParser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for !p.end() {
		c := p.peek()
		p.i++
		switch c {
		case '"':
			return b.String(), nil
		case '\\':
			if p.end() {
				return "", fmt.Errorf("extension list %q: unterminated escape", p.s)
			}
			b.WriteByte(p.peek())
			p.i++
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("extension list %q: unterminated quoted string", p.s)
}

func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// parseWindowBits parses a window bits value: a decimal integer from 8 to
// 15 without leading zeros (RFC 7692 sections 7.1.2.1 and 7.1.2.2).
func parseWindowBits(v string) (int, error) {
	if v == "" || v[0] == '0' || len(v) > 2 {
		return 0, fmt.Errorf("window bits %q: not an integer from 8 to 15 without leading zeros", v)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 8 || n > 15 {
		return 0, fmt.Errorf("window bits %q: not an integer from 8 to 15 without leading zeros", v)
	}
	return n, nil
}

// validateOffer reports why off is not a permessage-deflate offer that a
// server may accept (RFC 7692 section 5.1: unknown parameter, invalid
// value, duplicate parameter), or nil when it is one.
func validateOffer(off extension) error {
	if off.name != pmdName {
		return fmt.Errorf("offer %q is not %s", off, pmdName)
	}
	seen := map[string]bool{}
	for _, p := range off.params {
		if seen[p.name] {
			return fmt.Errorf("offer %q repeats %s", off, p.name)
		}
		seen[p.name] = true
		switch p.name {
		case serverNoContextTakeover, clientNoContextTakeover:
			if p.hasValue {
				return fmt.Errorf("offer %q: %s takes no value", off, p.name)
			}
		case serverMaxWindowBits:
			if !p.hasValue {
				return fmt.Errorf("offer %q: %s needs a value", off, p.name)
			}
			if _, err := parseWindowBits(p.value); err != nil {
				return fmt.Errorf("offer %q: %s: %v", off, p.name, err)
			}
		case clientMaxWindowBits:
			if p.hasValue {
				if _, err := parseWindowBits(p.value); err != nil {
					return fmt.Errorf("offer %q: %s: %v", off, p.name, err)
				}
			}
		default:
			return fmt.Errorf("offer %q: unknown parameter %s", off, p.name)
		}
	}
	return nil
}

// pmdParams is what a permessage-deflate negotiation settled.
type pmdParams struct {
	serverNoContextTakeover bool
	clientNoContextTakeover bool
	serverMaxWindowBits     int // 15 when the response sets no limit
	clientMaxWindowBits     int // 15 when the response sets no limit
}

// checkResponse checks that resp is a legal answer to the permessage-deflate
// offer off (RFC 7692 section 7.1) and returns the negotiated parameters:
//   - only the four defined parameters, each at most once;
//   - the no_context_takeover parameters carry no value; the server may
//     add either one on its own;
//   - a window bits value is an integer from 8 to 15;
//   - server_no_context_takeover and server_max_window_bits, when offered,
//     must be in the response, the latter with a value no larger than the
//     offered one;
//   - client_max_window_bits may be in the response only if offered, and
//     then with a value.
func checkResponse(off, resp extension) (pmdParams, error) {
	p := pmdParams{serverMaxWindowBits: 15, clientMaxWindowBits: 15}
	if resp.name != pmdName {
		return p, fmt.Errorf("response extension %q is not %s", resp, pmdName)
	}
	seen := map[string]bool{}
	for _, prm := range resp.params {
		if seen[prm.name] {
			return p, fmt.Errorf("response %q repeats %s", resp, prm.name)
		}
		seen[prm.name] = true
		switch prm.name {
		case serverNoContextTakeover, clientNoContextTakeover:
			if prm.hasValue {
				return p, fmt.Errorf("response %q: %s must not have a value", resp, prm.name)
			}
			if prm.name == serverNoContextTakeover {
				p.serverNoContextTakeover = true
			} else {
				p.clientNoContextTakeover = true
			}
		case serverMaxWindowBits:
			if !prm.hasValue {
				return p, fmt.Errorf("response %q: %s needs a value", resp, prm.name)
			}
			bits, err := parseWindowBits(prm.value)
			if err != nil {
				return p, fmt.Errorf("response %q: %s: %v", resp, prm.name, err)
			}
			if o, ok := off.param(serverMaxWindowBits); ok {
				if ob, err := parseWindowBits(o.value); err == nil && bits > ob {
					return p, fmt.Errorf("response %q: %s=%d is larger than the offered %d", resp, prm.name, bits, ob)
				}
			}
			p.serverMaxWindowBits = bits
		case clientMaxWindowBits:
			o, offered := off.param(clientMaxWindowBits)
			if !offered {
				return p, fmt.Errorf("response %q has %s, which the offer did not include", resp, prm.name)
			}
			if !prm.hasValue {
				return p, fmt.Errorf("response %q: %s needs a value in a response", resp, prm.name)
			}
			bits, err := parseWindowBits(prm.value)
			if err != nil {
				return p, fmt.Errorf("response %q: %s: %v", resp, prm.name, err)
			}
			p.clientMaxWindowBits = bits
			if o.hasValue {
				// The server may ignore the offered value; the client
				// still keeps to the smaller of the two.
				if ob, err := parseWindowBits(o.value); err == nil && ob < bits {
					p.clientMaxWindowBits = ob
				}
			}
		default:
			return p, fmt.Errorf("response %q: unknown parameter %s", resp, prm.name)
		}
	}
	if _, ok := off.param(serverNoContextTakeover); ok && !p.serverNoContextTakeover {
		return p, fmt.Errorf("response %q accepts an offer with %s but does not include it", resp, serverNoContextTakeover)
	}
	if _, ok := off.param(serverMaxWindowBits); ok && !seen[serverMaxWindowBits] {
		return p, fmt.Errorf("response %q accepts an offer with %s but does not include it", resp, serverMaxWindowBits)
	}
	if o, ok := off.param(clientMaxWindowBits); ok && o.hasValue && !seen[clientMaxWindowBits] {
		// The client offered to stay within a smaller window; it does so.
		if ob, err := parseWindowBits(o.value); err == nil {
			p.clientMaxWindowBits = ob
		}
	}
	if _, ok := off.param(clientNoContextTakeover); ok {
		// Offering it is the client's promise not to use context takeover.
		p.clientNoContextTakeover = true
	}
	return p, nil
}

// flushTail is the tail of a sync flush, which senders strip and receivers
// append again (RFC 7692 section 7.2.1 and 7.2.2).
var flushTail = []byte{0x00, 0x00, 0xFF, 0xFF}

// finalBlock is an empty stored block with BFINAL set. Appended after the
// flush tail it ends the DEFLATE stream, so the reader reports io.EOF
// instead of waiting for more input.
var finalBlock = []byte{0x01, 0x00, 0x00, 0xFF, 0xFF}

// compressor compresses the messages the client sends (RFC 7692 section
// 7.2.1). With takeover it keeps one DEFLATE stream, and so its LZ77
// window, across messages; without, every message starts afresh.
type compressor struct {
	level    int
	takeover bool
	buf      bytes.Buffer
	w        *flate.Writer
}

// newCompressor returns a compressor. Level is a compress/flate level;
// flate.HuffmanOnly never refers back, which keeps within any window size
// the server may have asked for.
func newCompressor(level int, takeover bool) *compressor {
	return &compressor{level: level, takeover: takeover}
}

// compress returns the compressed payload of one message, with the
// trailing 00 00 FF FF removed.
func (c *compressor) compress(p []byte) []byte {
	c.buf.Reset()
	if c.w == nil {
		w, err := flate.NewWriter(&c.buf, c.level)
		if err != nil {
			panic(err) // only for an invalid level, a bug in the suite
		}
		c.w = w
	} else if !c.takeover {
		c.w.Reset(&c.buf)
	}
	if _, err := c.w.Write(p); err != nil {
		panic(err) // writes to a bytes.Buffer do not fail
	}
	if err := c.w.Flush(); err != nil {
		panic(err)
	}
	out := c.buf.Bytes()
	if !bytes.HasSuffix(out, flushTail) {
		panic("conformance: sync flush did not end with 00 00 FF FF")
	}
	return bytes.Clone(out[:len(out)-len(flushTail)])
}

// compressFinal compresses p as a stream that ends with a BFINAL block and
// no flush tail, which RFC 7692 section 7.2.3.4 also allows.
func compressFinal(p []byte) []byte {
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestSpeed)
	if err != nil {
		panic(err)
	}
	if _, err := w.Write(p); err != nil {
		panic(err)
	}
	if err := w.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// compressOnce compresses p as a message of its own.
func compressOnce(p []byte, level int) []byte {
	return newCompressor(level, false).compress(p)
}

// errInflateTooLarge is returned when a message inflates beyond the limit.
var errInflateTooLarge = errors.New("decompressed message exceeds the suite's read limit")

// decompressor inflates the compressed messages the server sends (RFC 7692
// section 7.2.2). With takeover it keeps the last window bytes of output
// as the dictionary of the next message, so a server that refers back
// further than the window it negotiated produces an error.
type decompressor struct {
	takeover bool
	window   int
	dict     []byte
}

// decompress inflates one message payload, producing at most limit bytes.
func (d *decompressor) decompress(p []byte, limit int64) ([]byte, error) {
	src := io.MultiReader(bytes.NewReader(p), bytes.NewReader(flushTail), bytes.NewReader(finalBlock))
	var r io.ReadCloser
	if d.takeover && len(d.dict) > 0 {
		r = flate.NewReaderDict(src, d.dict)
	} else {
		r = flate.NewReader(src)
	}
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("inflate: %w", err)
	}
	if int64(len(out)) > limit {
		return nil, errInflateTooLarge
	}
	if d.takeover {
		d.dict = append(d.dict, out...)
		if len(d.dict) > d.window {
			d.dict = bytes.Clone(d.dict[len(d.dict)-d.window:])
		}
	}
	return out, nil
}
