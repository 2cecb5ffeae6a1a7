package conformance

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// suite holds what every case needs to know about the server under test.
type suite struct {
	cfg    Config
	addr   string // host:port to dial
	host   string // Host header
	target string // request target: path and query
	origin string
	// large is the size of the largest message the suite sends:
	// min(MaxMessageSize, 16 MiB).
	large int
	// readLimit bounds the frames and messages the client accepts from the
	// server, so a server announcing a huge frame cannot exhaust memory.
	readLimit int64
}

// newSuite checks cfg and derives the connection details.
func newSuite(cfg Config) (*suite, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("Config.URL %q: %v", cfg.URL, err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("Config.URL %q: scheme must be ws", cfg.URL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("Config.URL %q: no host", cfg.URL)
	}
	if cfg.MaxMessageSize <= 0 {
		return nil, fmt.Errorf("Config.MaxMessageSize must be positive, got %d", cfg.MaxMessageSize)
	}
	s := &suite{cfg: cfg, host: u.Host, addr: u.Host, target: u.RequestURI()}
	if u.Port() == "" {
		s.addr = net.JoinHostPort(u.Hostname(), "80")
	}
	s.origin = cfg.Origin
	if s.origin == "" {
		s.origin = "http://" + u.Host
	}
	s.large = int(min(cfg.MaxMessageSize, maxLarge))
	s.readLimit = max(cfg.MaxMessageSize, maxLarge) + 1<<16
	return s, nil
}

// needSize skips the case when a message of n bytes would be over the
// server's limit.
func (s *suite) needSize(t testing.TB, n int) {
	t.Helper()
	if int64(n) > s.cfg.MaxMessageSize {
		t.Skipf("needs %d-byte messages; Config.MaxMessageSize is %d", n, s.cfg.MaxMessageSize)
	}
}

// header is one request header line.
type header struct{ name, value string }

// request is an opening handshake request, kept as ordered header lines so
// that cases can send exactly what they mean to, including wrong values.
type request struct {
	method  string
	target  string
	headers []header
}

// newKey returns a fresh Sec-WebSocket-Key: 16 random bytes in base64.
func newKey() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return base64.StdEncoding.EncodeToString(b[:])
}

// acceptKey computes Sec-WebSocket-Accept for key (RFC 6455 section 4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// newRequest returns a valid handshake request with a fresh key.
func (s *suite) newRequest() *request {
	return &request{
		method: "GET",
		target: s.target,
		headers: []header{
			{"Host", s.host},
			{"Upgrade", "websocket"},
			{"Connection", "Upgrade"},
			{"Sec-WebSocket-Key", newKey()},
			{"Sec-WebSocket-Version", "13"},
			{"Origin", s.origin},
		},
	}
}

// set replaces the header called name, or appends it.
func (r *request) set(name, value string) {
	for i, h := range r.headers {
		if strings.EqualFold(h.name, name) {
			r.headers[i] = header{name, value}
			return
		}
	}
	r.headers = append(r.headers, header{name, value})
}

// del removes the header called name.
func (r *request) del(name string) {
	r.headers = slices.DeleteFunc(r.headers, func(h header) bool { return strings.EqualFold(h.name, name) })
}

// get returns the value of the header called name.
func (r *request) get(name string) string {
	for _, h := range r.headers {
		if strings.EqualFold(h.name, name) {
			return h.value
		}
	}
	return ""
}

// bytes returns the request as it goes on the wire.
func (r *request) bytes() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", r.method, r.target)
	for _, h := range r.headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h.name, h.value)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// upgrade opens a TCP connection, sends req and reads the response head.
// The connection is closed when the case ends.
func (s *suite) upgrade(t testing.TB, req *request) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout}
	nc, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatalf("dial %s: %v", s.addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	if err := nc.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	if _, err := nc.Write(req.bytes()); err != nil {
		t.Fatalf("send handshake request: %v", err)
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read handshake response: %v", err)
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		t.Fatalf("clear deadline: %v", err)
	}
	return nc, br, resp
}

// headerHasToken reports whether one of the comma-separated values of the
// header field contains token, compared case-insensitively.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, part := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}

// checkSwitch returns why resp is not a valid 101 answer to a request with
// the given key (RFC 6455 section 4.2.2), or nil.
func checkSwitch(key string, resp *http.Response) error {
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return fmt.Errorf("handshake: want status 101, got %q", resp.Status)
	}
	if !headerHasToken(resp.Header, "Upgrade", "websocket") {
		return fmt.Errorf("handshake: response Upgrade header is %q, want websocket", resp.Header.Values("Upgrade"))
	}
	if !headerHasToken(resp.Header, "Connection", "Upgrade") {
		return fmt.Errorf("handshake: response Connection header is %q, want it to include Upgrade", resp.Header.Values("Connection"))
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(key); got != want {
		return fmt.Errorf("handshake: Sec-WebSocket-Accept is %q, want %q", got, want)
	}
	if p := resp.Header.Values("Sec-WebSocket-Protocol"); len(p) > 0 {
		return fmt.Errorf("handshake: response selects subprotocol %q, but none was offered", p)
	}
	return nil
}

// dial opens a WebSocket connection without offering extensions.
func (s *suite) dial(t testing.TB) *conn {
	t.Helper()
	return s.dialOffer(t, "")
}

// dialOffer opens a WebSocket connection whose handshake offers the given
// Sec-WebSocket-Extensions value (none when empty). The handshake must
// succeed and the response must be legal for the offer; a declined offer
// leaves conn.pmd nil.
func (s *suite) dialOffer(t testing.TB, offer string) *conn {
	t.Helper()
	req := s.newRequest()
	if offer != "" {
		req.set("Sec-WebSocket-Extensions", offer)
	}
	nc, br, resp := s.upgrade(t, req)
	if err := checkSwitch(req.get("Sec-WebSocket-Key"), resp); err != nil {
		t.Fatal(err)
	}
	c := newConn(t, s, nc, br, resp)
	pmd, err := negotiated(offer, resp.Header.Values("Sec-WebSocket-Extensions"))
	if err != nil {
		t.Fatal(err)
	}
	c.setPMD(pmd)
	return c
}

// negotiated checks the extensions of a 101 response against the offer
// and returns the accepted permessage-deflate parameters, or nil if the
// server declined. A response is legal when it names no extension, or
// exactly one permessage-deflate that is a legal answer to one of the
// valid offers.
func negotiated(offer string, respValues []string) (*pmdParams, error) {
	resp, err := parseExtensions(respValues)
	if err != nil {
		return nil, fmt.Errorf("handshake: response Sec-WebSocket-Extensions: %v", err)
	}
	if len(resp) == 0 {
		return nil, nil
	}
	if len(resp) > 1 {
		return nil, fmt.Errorf("handshake: response accepts %d extensions %q; at most one permessage-deflate can be accepted", len(resp), respValues)
	}
	offers, err := parseExtensions([]string{offer})
	if err != nil {
		return nil, fmt.Errorf("handshake: the suite's offer %q does not parse: %v", offer, err)
	}
	var why []string
	for _, off := range offers {
		if off.name != pmdName {
			continue
		}
		if err := validateOffer(off); err != nil {
			why = append(why, fmt.Sprintf("the offer %q is invalid and must be declined", off))
			continue
		}
		p, err := checkResponse(off, resp[0])
		if err == nil {
			return &p, nil
		}
		why = append(why, err.Error())
	}
	if len(why) == 0 {
		return nil, fmt.Errorf("handshake: response accepts extension %q, which was not offered (offer: %q)", resp[0], offer)
	}
	return nil, fmt.Errorf("handshake: response Sec-WebSocket-Extensions %q is not a legal answer to the offer %q: %s", respValues, offer, strings.Join(why, "; "))
}
