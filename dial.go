package wsgate

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
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
	StatusCode int    // HTTP status of the server's answer, 0 if there was none
	Body       string // the first KiB of its body
	Reason     string // what was wrong
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

// Dial opens a client connection to a ws:// or wss:// URL. ctx bounds the
// dial and the opening handshake (Options.HandshakeTimeout applies when ctx
// has no earlier deadline); it does not limit the connection's life.
func Dial(ctx context.Context, rawURL string, opts *Options) (*Conn, error) {
	cfg := newConfig(opts)
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("wsgate: dial: %w", err)
	}
	secure := false
	switch u.Scheme {
	case "ws", "http":
	case "wss", "https":
		secure = true
	default:
		return nil, fmt.Errorf("wsgate: dial: unsupported scheme %q", u.Scheme)
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
		return nil, fmt.Errorf("wsgate: dial: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	c, err := clientHandshake(ctx, nc, u, secure, cfg)
	if !stop() {
		if c != nil {
			c.CloseNow()
		} else {
			nc.Close()
		}
		return nil, fmt.Errorf("wsgate: dial: %w", ctx.Err())
	}
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func clientHandshake(ctx context.Context, nc net.Conn, u *url.URL, secure bool, cfg *config) (*Conn, error) {
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
			return nil, fmt.Errorf("wsgate: dial: TLS: %w", err)
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
			if strings.ContainsAny(k+v, "\r\n") {
				return nil, fmt.Errorf("wsgate: dial: header %q contains a line break", k)
			}
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(nc, b.String()); err != nil {
		return nil, fmt.Errorf("wsgate: dial: writing handshake: %w", err)
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet, URL: u})
	if err != nil {
		return nil, fmt.Errorf("wsgate: dial: reading handshake response: %w", err)
	}
	bad := func(reason string) error {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return &HandshakeError{StatusCode: resp.StatusCode, Body: string(body), Reason: reason}
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, bad("server did not switch protocols")
	}
	if !headerHasToken(resp.Header, "Upgrade", "websocket") || !headerHasToken(resp.Header, "Connection", "upgrade") {
		return nil, bad("missing Upgrade/Connection headers")
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		return nil, bad("wrong Sec-WebSocket-Accept")
	}
	sub := resp.Header.Get("Sec-WebSocket-Protocol")
	if sub != "" {
		ok := false
		for _, s := range cfg.Subprotocols {
			ok = ok || s == sub
		}
		if !ok {
			return nil, bad("server chose a subprotocol that was not offered")
		}
	}
	var dp *deflateParams
	if exts := resp.Header.Values("Sec-WebSocket-Extensions"); len(exts) > 0 {
		if !cfg.Compression {
			return nil, bad("server accepted an extension that was not offered")
		}
		dp, err = checkDeflateResponse(exts)
		if err != nil {
			return nil, bad(err.Error())
		}
	}
	var leftover []byte
	if n := br.Buffered(); n > 0 {
		leftover, _ = br.Peek(n)
	}
	nc.SetDeadline(time.Time{})
	return newConn(nc, false, cfg, sub, dp, leftover), nil
}
