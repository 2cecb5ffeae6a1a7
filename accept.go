package wsgate

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
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
// error wrapping ErrBadHandshake or ErrOriginNotAllowed.
//
// The handler may return as soon as Upgrade does: the connection lives on
// by itself. With Options.OnMessage set it costs no goroutine while idle.
func Upgrade(w http.ResponseWriter, r *http.Request, opts *Options) (*Conn, error) {
	cfg := newConfig(opts)
	if err := checkUpgrade(w, r); err != nil {
		return nil, err
	}
	if !cfg.InsecureSkipOriginCheck {
		if err := checkOrigin(r, cfg.OriginPatterns); err != nil {
			http.Error(w, "WebSocket origin not allowed", http.StatusForbidden)
			return nil, err
		}
	}
	sub := selectSubprotocol(r, cfg.Subprotocols)
	var ext string
	var dp *deflateParams
	if cfg.Compression {
		ext, dp = acceptDeflate(r.Header.Values("Sec-WebSocket-Extensions"))
	}
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "WebSocket upgrade not supported on this connection", http.StatusInternalServerError)
		return nil, fmt.Errorf("%w: cannot take over the connection: %w", ErrBadHandshake, err)
	}
	var leftover []byte
	if n := brw.Reader.Buffered(); n > 0 {
		leftover, _ = brw.Reader.Peek(n)
	}
	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(acceptKey(r.Header.Get("Sec-WebSocket-Key")))
	if sub != "" {
		b.WriteString("\r\nSec-WebSocket-Protocol: ")
		b.WriteString(sub)
	}
	if ext != "" {
		b.WriteString("\r\nSec-WebSocket-Extensions: ")
		b.WriteString(ext)
	}
	b.WriteString("\r\n\r\n")
	nc.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
	if _, err := nc.Write([]byte(b.String())); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: writing response: %w", ErrBadHandshake, err)
	}
	nc.SetDeadline(time.Time{})
	return newConn(nc, true, cfg, sub, dp, leftover), nil
}

// checkUpgrade validates the request and answers it when it is not a valid
// WebSocket upgrade.
func checkUpgrade(w http.ResponseWriter, r *http.Request) error {
	fail := func(status int, msg string) error {
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		http.Error(w, msg, status)
		return fmt.Errorf("%w: %s", ErrBadHandshake, msg)
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return fail(http.StatusUpgradeRequired, "this endpoint speaks WebSocket only: expected an Upgrade: websocket request")
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		return fail(http.StatusMethodNotAllowed, "WebSocket handshake must use GET")
	}
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return fail(http.StatusBadRequest, "WebSocket handshake needs HTTP/1.1")
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

// checkOrigin accepts requests without an Origin, same-origin requests, and
// origins whose host matches one of the patterns.
func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: malformed Origin %q", ErrOriginNotAllowed, origin)
	}
	if strings.EqualFold(u.Host, r.Host) {
		return nil
	}
	host := strings.ToLower(u.Host)
	for _, p := range patterns {
		p = strings.ToLower(p)
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
func Wrap(nc net.Conn, role Role, opts *Options) *Conn {
	return newConn(nc, role == RoleServer, newConfig(opts), "", nil, nil)
}
