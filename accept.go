package wsgate

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptKey computes Sec-WebSocket-Accept for a Sec-WebSocket-Key.
func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(acceptGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// Upgrade completes the server side of the opening handshake and returns
// the connection. On failure it has already answered the request with a
// 4xx status and a plain-text message (400 for a malformed handshake, 403
// for a refused Origin, 405 for a method other than GET, 426 for a request
// that is not a WebSocket upgrade or has the wrong version) and returns an
// error wrapping ErrBadHandshake or ErrOriginNotAllowed; when the
// connection cannot be served (no file descriptor left, no event loop) it
// answers 503 and the error wraps ErrEngine.
//
// The 101 response carries the headers the handler set on w.Header()
// (Set-Cookie, for example), except those the handshake itself decides.
//
// The handler may return as soon as Upgrade does: the connection lives on
// by itself. With Options.OnMessage set it costs no goroutine while idle.
// Callbacks may run before Upgrade returns; Options.OnOpen runs first.
func Upgrade(w http.ResponseWriter, r *http.Request, opts *Options) (*Conn, error) {
	cfg := newConfig(opts)
	if cfg.err != nil {
		http.Error(w, "WebSocket endpoint misconfigured", http.StatusInternalServerError)
		return nil, cfg.err
	}
	return upgrade(w, r, cfg, nil)
}

// Upgrader upgrades requests with one set of options that all of its
// connections share: for a server with many connections it saves the
// per-connection copy of the options that Upgrade makes (a few hundred
// bytes each) and their validation on every request. Callbacks see which
// connection they serve through their *Conn argument and its Value.
//
// An Upgrader is safe for concurrent use.
type Upgrader struct {
	cfg *config
}

// NewUpgrader returns an Upgrader for opts, which it copies: later changes
// to opts do not affect it. It fails when opts is invalid.
func NewUpgrader(opts *Options) (*Upgrader, error) {
	cfg := newConfig(opts)
	if cfg.err != nil {
		return nil, cfg.err
	}
	return &Upgrader{cfg: cfg}, nil
}

// Upgrade is the package-level Upgrade with the Upgrader's options.
func (u *Upgrader) Upgrade(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	return upgrade(w, r, u.cfg, nil)
}

// UpgradeWithValue is Upgrade with the connection's Value set before any
// callback runs: callbacks shared by every connection (OnOpen, OnMessage,
// OnClose) find the application's per-connection state there, with no
// closure per connection.
func (u *Upgrader) UpgradeWithValue(w http.ResponseWriter, r *http.Request, value any) (*Conn, error) {
	return upgrade(w, r, u.cfg, value)
}

func upgrade(w http.ResponseWriter, r *http.Request, cfg *config, value any) (*Conn, error) {
	hs, herr := negotiate(r, cfg, w.Header())
	if herr != nil {
		herr.write(w)
		return nil, herr.cause
	}
	sub, dp := hs.sub, hs.dp
	resp := hs.response
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "WebSocket upgrade not supported on this connection", http.StatusInternalServerError)
		return nil, fmt.Errorf("%w: cannot take over the connection: %w", ErrBadHandshake, err)
	}
	var leftover []byte
	if n := brw.Reader.Buffered(); n > 0 {
		leftover, _ = brw.Reader.Peek(n)
	}
	c := newConn(nc, true, cfg, sub, dp)
	if value != nil {
		c.extLocked().value = value // no other goroutine knows c yet
	}
	if err := c.attach(nc); err != nil {
		nc.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
		io.WriteString(nc, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 29\r\n\r\nserver busy, try again later\n")
		nc.Close()
		return nil, err
	}
	if err := c.writeHandshake(nc, resp, cfg.HandshakeTimeout); err != nil {
		c.detach()
		nc.Close()
		return nil, fmt.Errorf("%w: writing response: %w", ErrBadHandshake, err)
	}
	c.run(nc, leftover)
	return c, nil
}

// writeHandshake writes the 101 response. An event-loop connection writes
// it on its own descriptor, which the runtime's poller and net/http's
// deadlines never see: on a fresh socket the few hundred bytes always fit,
// so no deadline is needed (and setting and clearing one costs more than
// the write). Other transports write through nc under a deadline, which
// they clear, since net/http may have left read and write deadlines on it.
func (c *Conn) writeHandshake(nc net.Conn, resp string, timeout time.Duration) error {
	if c.fd >= 0 {
		if n, err := writev2(c.fd, []byte(resp), nil); err != nil || n == len(resp) {
			return err
		} else if n > 0 {
			resp = resp[n:] // a full socket buffer: finish the slow way
		}
	}
	nc.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(nc, resp); err != nil {
		return err
	}
	return nc.SetDeadline(time.Time{})
}

// writeExtraHeaders adds the handler's headers to the 101 response, leaving
// out those the handshake decides and any value that would break the
// response.
func writeExtraHeaders(b *strings.Builder, h http.Header) {
	for k, vs := range h {
		if handshakeHeader(k) {
			continue
		}
		for _, v := range vs {
			if !validHeader(k, v) {
				continue
			}
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
}

// validHeader reports whether k is a header name token and v a value
// without control characters other than tab.
func validHeader(k, v string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// handshakeHeader reports whether the opening handshake itself decides the
// header k, so that neither an application nor a user may set it.
func handshakeHeader(k string) bool {
	switch http.CanonicalHeaderKey(k) {
	case "Host", "Upgrade", "Connection", "Content-Length", "Transfer-Encoding", "Keep-Alive", "Te", "Trailer", "Proxy-Connection":
		return true
	}
	return strings.HasPrefix(http.CanonicalHeaderKey(k), "Sec-Websocket-")
}

// handshake is the outcome of a valid opening handshake request.
type handshake struct {
	sub      string         // the agreed subprotocol, "" for none
	dp       *deflateParams // nil without permessage-deflate
	response string         // the 101 response, headers and blank line included
}

// handshakeError is a refused opening handshake: the HTTP answer to send
// and the error Upgrade returns.
type handshakeError struct {
	status int
	msg    string
	header http.Header // extra response headers, may be nil
	cause  error
}

// write answers the request with the refusal.
func (e *handshakeError) write(w http.ResponseWriter) {
	for k, vs := range e.header {
		w.Header()[k] = vs
	}
	http.Error(w, e.msg, e.status)
}

// raw returns the refusal as a complete HTTP/1.1 response that closes the
// connection, for a handshake read by an event loop.
func (e *handshakeError) raw() []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: %d\r\n", e.status, http.StatusText(e.status), len(e.msg)+1)
	for k, vs := range e.header {
		for _, v := range vs {
			if validHeader(k, v) {
				fmt.Fprintf(&b, "%s: %s\r\n", k, v)
			}
		}
	}
	b.WriteString("\r\n")
	b.WriteString(e.msg)
	b.WriteString("\n")
	return []byte(b.String())
}

// negotiate checks an opening handshake request against cfg and builds the
// 101 response, with the extra headers the application set (extra may be
// nil); or returns the refusal.
func negotiate(r *http.Request, cfg *config, extra http.Header) (*handshake, *handshakeError) {
	if herr := checkUpgrade(r); herr != nil {
		return nil, herr
	}
	if !cfg.InsecureSkipOriginCheck {
		if err := checkOrigin(r, cfg.OriginPatterns, cfg.TrustForwardedProto); err != nil {
			return nil, &handshakeError{status: http.StatusForbidden, msg: "WebSocket origin not allowed", cause: err}
		}
	}
	hs := &handshake{sub: selectSubprotocol(r, cfg.Subprotocols)}
	var ext string
	if cfg.Compression && cfg.Budget.allowsCompression() {
		ext, hs.dp = acceptDeflate(r.Header.Values("Sec-WebSocket-Extensions"), cfg.ClientContextTakeover)
	}
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(acceptKey(r.Header.Get("Sec-WebSocket-Key")))
	if hs.sub != "" {
		b.WriteString("\r\nSec-WebSocket-Protocol: ")
		b.WriteString(hs.sub)
	}
	if ext != "" {
		b.WriteString("\r\nSec-WebSocket-Extensions: ")
		b.WriteString(ext)
	}
	b.WriteString("\r\n")
	writeExtraHeaders(&b, extra)
	b.WriteString("\r\n")
	hs.response = b.String()
	return hs, nil
}

// checkUpgrade validates a WebSocket upgrade request.
func checkUpgrade(r *http.Request) *handshakeError {
	fail := func(status int, msg string) *handshakeError {
		e := &handshakeError{status: status, msg: msg, cause: fmt.Errorf("%w: %s", ErrBadHandshake, msg)}
		if status == http.StatusUpgradeRequired {
			e.header = http.Header{"Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"}}
		}
		return e
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return fail(http.StatusUpgradeRequired, "this endpoint speaks WebSocket only: expected an Upgrade: websocket request")
	}
	if r.Method != http.MethodGet {
		e := fail(http.StatusMethodNotAllowed, "WebSocket handshake must use GET")
		e.header = http.Header{"Allow": {http.MethodGet}}
		return e
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return fail(http.StatusBadRequest, "WebSocket handshake needs HTTP/1.1")
	}
	if !strings.HasPrefix(r.RequestURI, "/") {
		// An absolute-form target (GET http://host/ws) would set the Host
		// the origin check compares with, from the request line.
		return fail(http.StatusBadRequest, "WebSocket handshake needs an origin-form request target (/path)")
	}
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		// The bytes of a body would be read as WebSocket frames.
		return fail(http.StatusBadRequest, "WebSocket handshake must not have a body")
	}
	if r.Header.Get("Sec-WebSocket-Version") != "13" {
		return fail(http.StatusUpgradeRequired, "unsupported Sec-WebSocket-Version: only 13 is supported")
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if k, err := base64.StdEncoding.DecodeString(key); err != nil || len(k) != 16 {
		return fail(http.StatusBadRequest, "missing or invalid Sec-WebSocket-Key")
	}
	return nil
}

// headerHasToken reports whether a comma-separated header contains token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// checkOrigin accepts requests without an Origin (browsers always send
// one), same-origin requests, and origins whose host matches one of the
// patterns.
//
// Same origin means the same host and port and a scheme at least as secure
// as the request's: a page served over https may open a socket to the same
// host reached over plain http (as it is behind a TLS-terminating proxy),
// but a page served over plain http (which anyone on the path can alter)
// may not reach an endpoint served over TLS. The request counts as TLS when
// it arrived over TLS or, with trustForwarded, when X-Forwarded-Proto says
// https.
func checkOrigin(r *http.Request, patterns []string, trustForwarded bool) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%w: malformed Origin %q", ErrOriginNotAllowed, origin)
	}
	secure := r.TLS != nil
	if trustForwarded {
		if p := r.Header.Get("X-Forwarded-Proto"); p != "" {
			secure = strings.EqualFold(strings.TrimSpace(strings.Split(p, ",")[0]), "https")
		}
	}
	if secure && u.Scheme != "https" {
		return fmt.Errorf("%w: %q is not a secure origin (request over https)", ErrOriginNotAllowed, origin)
	}
	host := strings.ToLower(u.Host)
	if sameHostPort(host, u.Scheme, strings.ToLower(r.Host), secure) {
		return nil
	}
	for _, p := range patterns {
		p = strings.ToLower(p)
		if strings.Contains(p, "://") {
			// A pattern with a scheme matches the whole origin.
			if ok, _ := path.Match(p, u.Scheme+"://"+host); ok {
				return nil
			}
			continue
		}
		if ok, _ := path.Match(p, host); ok {
			return nil
		}
		// A pattern without a port matches the host on any port.
		if h, _, err := net.SplitHostPort(host); err == nil && !strings.Contains(p, ":") {
			if ok, _ := path.Match(p, h); ok {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %q (request host %q)", ErrOriginNotAllowed, origin, r.Host)
}

// sameHostPort compares an origin's host[:port] with a request's Host,
// filling in the default ports.
func sameHostPort(origin, scheme, host string, secure bool) bool {
	if origin == host {
		return true
	}
	withPort := func(hp, def string) string {
		if _, _, err := net.SplitHostPort(hp); err == nil {
			return hp
		}
		if strings.Count(hp, ":") > 1 && !strings.HasPrefix(hp, "[") {
			hp = "[" + hp + "]"
		}
		return hp + ":" + def
	}
	odef := "80"
	if scheme == "https" {
		odef = "443"
	}
	hdef := "80"
	if secure {
		hdef = "443"
	}
	return withPort(origin, odef) == withPort(host, hdef)
}

// selectSubprotocol returns the first server preference the client offers.
func selectSubprotocol(r *http.Request, supported []string) string {
	if len(supported) == 0 {
		return ""
	}
	var offered []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			offered = append(offered, strings.TrimSpace(p))
		}
	}
	for _, s := range supported {
		for _, o := range offered {
			if o == s {
				return s
			}
		}
	}
	return ""
}

// Role says which side of the protocol a wrapped connection plays.
type Role int

// The two roles. Servers read masked frames and write unmasked ones;
// clients do the opposite.
const (
	RoleServer Role = iota
	RoleClient
)

// Wrap turns a net.Conn whose opening handshake is already complete into a
// Conn, like the tutorial's InitConnection. No extension and no subprotocol
// are assumed. Bytes the handshake code read past the handshake must be
// supplied first by nc's Read.
//
// Wrap panics if opts is invalid (a SlowConsumerStatus that cannot be
// sent), as Upgrade and Dial would fail.
func Wrap(nc net.Conn, role Role, opts *Options) *Conn {
	cfg := newConfig(opts)
	if cfg.err != nil {
		panic(cfg.err)
	}
	c := newConn(nc, role == RoleServer, cfg, "", nil)
	if err := c.attach(nc); err != nil {
		// No event loop for it: a reader goroutine serves it instead.
		c.nt = &netTransport{nc: nc, resume: make(chan struct{}, 1)}
		defaultEngine.reserve(false)
	}
	c.run(nc, nil)
	return c
}
