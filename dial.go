package wsgate

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// HandshakeError is returned by Dial when the server does not complete the
// opening handshake. It matches ErrBadHandshake.
type HandshakeError struct {
	StatusCode int         // HTTP status of the server's answer, 0 if there was none
	Header     http.Header // the answer's headers, nil if there was none
	Body       string      // the first KiB of its body
	Reason     string      // what was wrong
}

func (e *HandshakeError) Error() string {
	s := "wsgate: handshake failed: " + e.Reason
	if e.StatusCode != 0 {
		s += fmt.Sprintf(" (HTTP %d", e.StatusCode)
		if b := strings.TrimSpace(e.Body); b != "" {
			s += ": " + b
		}
		s += ")"
	}
	return s
}

// Is makes errors.Is(err, ErrBadHandshake) hold.
func (e *HandshakeError) Is(target error) bool { return target == ErrBadHandshake }

// maxResponseHeader bounds the size of the server's handshake response
// head that Dial reads.
const maxResponseHeader = 64 << 10

// Dial opens a client connection to a ws:// or wss:// URL. ctx bounds the
// dial and the opening handshake (Options.HandshakeTimeout applies when ctx
// has no earlier deadline); it does not limit the connection's life.
func Dial(ctx context.Context, rawURL string, opts *Options) (*Conn, error) {
	c, _, err := DialWithResponse(ctx, rawURL, opts)
	return c, err
}

// DialWithResponse is Dial that also returns the server's handshake
// response: its status and headers (a session cookie, a server-chosen
// header). The response is returned whenever the server answered, also
// when the handshake failed; its Body is always empty (the first KiB of a
// failed handshake's body is in the *HandshakeError).
func DialWithResponse(ctx context.Context, rawURL string, opts *Options) (*Conn, *http.Response, error) {
	cfg := newConfig(opts)
	if cfg.err != nil {
		return nil, nil, cfg.err
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, fmt.Errorf("wsgate: dial: %w", err)
	}
	for k := range cfg.Header {
		if handshakeHeader(k) {
			return nil, nil, fmt.Errorf("wsgate: dial: header %q is set by the handshake itself", k)
		}
	}
	secure := false
	switch u.Scheme {
	case "ws", "http":
	case "wss", "https":
		secure = true
	default:
		return nil, nil, fmt.Errorf("wsgate: dial: unsupported scheme %q", u.Scheme)
	}
	hostport := u.Host
	if u.Port() == "" {
		if secure {
			hostport = net.JoinHostPort(u.Hostname(), "443")
		} else {
			hostport = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	dial := cfg.NetDialContext
	if dial == nil {
		// No TCP keepalive: the Conn's ping/pong finds dead peers, faster.
		d := net.Dialer{KeepAlive: -1}
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", hostport)
	if err != nil {
		return nil, nil, fmt.Errorf("wsgate: dial: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	c, resp, err := clientHandshake(ctx, nc, u, secure, cfg)
	if !stop() {
		if c != nil {
			c.CloseNow()
		} else {
			nc.Close()
		}
		return nil, resp, fmt.Errorf("wsgate: dial: %w", ctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, resp, err
	}
	return c, resp, nil
}

// limitedReader reads at most n bytes of the handshake response, failing
// with errResponseTooBig beyond.
type limitedReader struct {
	r io.Reader
	n int
}

var errResponseTooBig = fmt.Errorf("handshake response head larger than %d bytes", maxResponseHeader)

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errResponseTooBig
	}
	if len(p) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= n
	return n, err
}

func clientHandshake(ctx context.Context, nc net.Conn, u *url.URL, secure bool, cfg *config) (*Conn, *http.Response, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if secure {
		tcfg := cfg.TLSConfig
		if tcfg == nil {
			tcfg = &tls.Config{}
		}
		if tcfg.ServerName == "" {
			tcfg = tcfg.Clone()
			tcfg.ServerName = u.Hostname()
		}
		tc := tls.Client(nc, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, nil, fmt.Errorf("wsgate: dial: TLS: %w", err)
		}
		nc = tc
	}
	var kb [16]byte
	rand.Read(kb[:])
	key := base64.StdEncoding.EncodeToString(kb[:])
	path := u.RequestURI()
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", path, u.Host, key)
	if len(cfg.Subprotocols) > 0 {
		fmt.Fprintf(&b, "Sec-WebSocket-Protocol: %s\r\n", strings.Join(cfg.Subprotocols, ", "))
	}
	if cfg.Compression {
		fmt.Fprintf(&b, "Sec-WebSocket-Extensions: %s\r\n", clientDeflateOffer)
	}
	for k, vs := range cfg.Header {
		for _, v := range vs {
			if !validHeader(k, v) {
				return nil, nil, fmt.Errorf("wsgate: dial: invalid header %q", k)
			}
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(nc, b.String()); err != nil {
		return nil, nil, fmt.Errorf("wsgate: dial: writing handshake: %w", err)
	}
	lr := &limitedReader{r: nc, n: maxResponseHeader}
	br := bufio.NewReaderSize(lr, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet, URL: u})
	if err != nil {
		if errors.Is(err, errResponseTooBig) {
			return nil, nil, &HandshakeError{Reason: errResponseTooBig.Error()}
		}
		return nil, nil, fmt.Errorf("wsgate: dial: reading handshake response: %w", err)
	}
	bad := func(reason string) (*Conn, *http.Response, error) {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body = http.NoBody
		return nil, resp, &HandshakeError{StatusCode: resp.StatusCode, Header: resp.Header, Body: string(body), Reason: reason}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.ProtoMajor != 1 || resp.ProtoMinor < 1 {
		return bad("server did not switch protocols")
	}
	if !headerHasToken(resp.Header, "Upgrade", "websocket") || !headerHasToken(resp.Header, "Connection", "upgrade") {
		return bad("missing Upgrade/Connection headers")
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		return bad("wrong Sec-WebSocket-Accept")
	}
	sub := resp.Header.Get("Sec-WebSocket-Protocol")
	if sub != "" {
		ok := false
		for _, s := range cfg.Subprotocols {
			ok = ok || s == sub
		}
		if !ok {
			return bad("server chose a subprotocol that was not offered")
		}
	}
	var dp *deflateParams
	if exts := resp.Header.Values("Sec-WebSocket-Extensions"); len(exts) > 0 {
		if !cfg.Compression {
			return bad("server accepted an extension that was not offered")
		}
		dp, err = checkDeflateResponse(exts)
		if err != nil {
			return bad(err.Error())
		}
	}
	var leftover []byte
	if n := br.Buffered(); n > 0 {
		leftover, _ = br.Peek(n)
	}
	resp.Body = http.NoBody
	c := newConn(nc, false, cfg, sub, dp)
	if err := c.attach(nc); err != nil {
		return nil, resp, fmt.Errorf("wsgate: dial: %w", err)
	}
	nc.SetDeadline(time.Time{})
	c.run(nc, leftover)
	return c, resp, nil
}
