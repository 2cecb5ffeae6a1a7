package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// rawConn opens a TCP connection to addr that is closed when the test
// ends; every read and write on it fails after waitTimeout.
func rawConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, waitTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(waitTimeout))
	return nc
}

// readUntilClosed reads nc until the server closes it and returns what it
// read. A reset counts as closed; a timeout fails the test.
func readUntilClosed(t *testing.T, nc net.Conn) string {
	t.Helper()
	got, err := tryReadUntilClosed(nc)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// tryReadUntilClosed is readUntilClosed for any goroutine.
func tryReadUntilClosed(nc net.Conn) (string, error) {
	var buf strings.Builder
	_, err := io.Copy(&buf, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return buf.String(), fmt.Errorf("the server did not close the connection within %v; read %q", waitTimeout, buf.String())
	}
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		return buf.String(), fmt.Errorf("read: %w", err)
	}
	return buf.String(), nil
}

// slowBody sends the headers of a GET /healthz that announces a body, then
// one byte of the body every interval until the connection fails. It
// returns what the server answered once it has closed the connection. It
// may run on any goroutine.
func slowBody(nc net.Conn, interval time.Duration) (string, error) {
	if _, err := fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: %s\r\nContent-Length: 100000\r\n\r\n", nc.RemoteAddr()); err != nil {
		return "", fmt.Errorf("writing headers: %w", err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := nc.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()
	return tryReadUntilClosed(nc)
}

func TestSlowBodyIsCutAfterReadTimeout(t *testing.T) {
	t.Parallel()
	const readTimeout = 600 * time.Millisecond
	ts := startServer(t, Config{Heartbeat: -1, HandshakeTimeout: 200 * time.Millisecond, ReadTimeout: readTimeout})
	nc := rawConn(t, ts.addr)
	start := time.Now()
	// A byte every 50 ms: the connection is never idle, but the whole
	// request must be in within the read timeout.
	if _, err := slowBody(nc, 50*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	d := time.Since(start)
	if d < readTimeout*3/4 {
		t.Errorf("connection closed after %v, before the %v read timeout", d, readTimeout)
	}
	if d > readTimeout+3*time.Second {
		t.Errorf("connection closed after %v with a %v read timeout", d, readTimeout)
	}
	waitFor(t, "the connection to leave the count", func() bool { return ts.HTTPConnCount() == 0 })
}

func TestDefaultReadTimeoutBoundsTheBody(t *testing.T) {
	t.Parallel()
	s, err := New(Config{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if s.hs.ReadTimeout != DefaultReadTimeout || s.hs.ReadHeaderTimeout != DefaultHandshakeTimeout ||
		s.hs.WriteTimeout != DefaultWriteTimeout || s.hs.IdleTimeout != DefaultIdleTimeout ||
		s.hs.MaxHeaderBytes != DefaultMaxHeaderBytes || s.hs.ConnState == nil {
		t.Errorf("http.Server: read %v header %v write %v idle %v max header %d, ConnState set %v",
			s.hs.ReadTimeout, s.hs.ReadHeaderTimeout, s.hs.WriteTimeout, s.hs.IdleTimeout, s.hs.MaxHeaderBytes, s.hs.ConnState != nil)
	}
	if c, _ := (Config{HandshakeTimeout: time.Minute}).withDefaults(); c.ReadTimeout != time.Minute {
		t.Errorf("read timeout %v with a 1m handshake timeout, want 1m", c.ReadTimeout)
	}
}

// stallHeaders opens a connection that sends part of a request's headers
// and then nothing: counted, never served until the handshake timeout.
func stallHeaders(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc := rawConn(t, addr)
	if _, err := fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: %s\r\n", addr); err != nil {
		t.Fatal(err)
	}
	return nc
}

func TestMaxHTTPConns(t *testing.T) {
	t.Parallel()
	const limit = 3
	ts := startServer(t, Config{Heartbeat: -1, MaxHTTPConns: limit})

	// WebSocket connections leave the HTTP count when they are upgraded:
	// more of them than the limit all get in.
	var wss []*wsgate.Conn
	for range 2 * limit {
		wss = append(wss, dial(t, ts.wsURL(), nil))
	}
	waitFor(t, "upgraded connections to leave the HTTP count", func() bool {
		return ts.HTTPConnCount() == 0 && ts.ConnCount() == 2*limit
	})

	// Slow clients fill the HTTP slots.
	var stalled []net.Conn
	for range limit {
		stalled = append(stalled, stallHeaders(t, ts.addr))
	}
	waitFor(t, "the slow clients to be counted", func() bool { return ts.HTTPConnCount() == limit })

	// Further connections get a 503 at once and are closed, as soon as
	// they send something (the kernel holds a connection that has not,
	// TCP_DEFER_ACCEPT): here the first line of a request.
	for i := range 2 {
		nc := rawConn(t, ts.addr)
		start := time.Now()
		if _, err := fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\n"); err != nil {
			t.Fatal(err)
		}
		got := readUntilClosed(t, nc)
		if !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.Contains(got, "too many connections") {
			t.Errorf("extra connection %d got %q, want a 503", i, got)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("extra connection %d refused after %v, want at once", i, d)
		}
	}
	// An HTTP client sees the 503 or, if it had not read it when the
	// connection closed, an error: only a success is wrong.
	client := &http.Client{Timeout: waitTimeout}
	if resp, err := client.Get(ts.httpURL() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("GET /healthz over the limit = %d, want 503", resp.StatusCode)
		}
	}
	client.CloseIdleConnections()
	rec := ts.logs.waitLog(t, "http connections refused", map[string]any{"max_http_conns": limit})
	if rec["level"] != "WARN" {
		t.Errorf("refusal logged at %v, want WARN", rec["level"])
	}
	if n := ts.HTTPConnCount(); n != limit {
		t.Errorf("%d HTTP connections counted after the refusals, want %d", n, limit)
	}

	// The WebSocket connections work on.
	for i, c := range wss {
		msg := fmt.Sprintf("still here %d", i)
		write(t, c, wsgate.TextMessage, []byte(msg))
		if _, p := read(t, c); string(p) != msg {
			t.Fatalf("echo on connection %d = %q", i, p)
		}
	}

	// Once the slow clients are gone, new clients are served again.
	for _, nc := range stalled {
		nc.Close()
	}
	waitFor(t, "the slots to be released", func() bool { return ts.HTTPConnCount() == 0 })
	if status, _, body := httpGet(t, ts.httpURL()+"/healthz"); status != http.StatusOK {
		t.Errorf("GET /healthz after the slow clients left = %d %q", status, body)
	}
	c := dial(t, ts.wsURL(), nil)
	write(t, c, wsgate.TextMessage, []byte("new"))
	if _, p := read(t, c); string(p) != "new" {
		t.Errorf("echo on a new connection = %q", p)
	}
}

func TestMaxHTTPConnsClosesIdleToMakeRoom(t *testing.T) {
	t.Parallel()
	const limit = 2
	ts := startServer(t, Config{Heartbeat: -1, MaxHTTPConns: limit})
	// Keep-alive connections that made a request and now wait for the next.
	var idle []net.Conn
	for range limit {
		nc := rawConn(t, ts.addr)
		fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", ts.addr)
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("first request: %v %v", resp, err)
		}
		resp.Body.Close()
		idle = append(idle, nc)
	}
	waitFor(t, "two idle connections", func() bool { return ts.http.countIn(http.StateIdle) == limit })
	// A new client gets in; one idle connection is closed for it.
	if status, _, _ := httpGet(t, ts.httpURL()+"/healthz"); status != http.StatusOK {
		t.Fatalf("GET /healthz at the limit = %d, want 200", status)
	}
	closed := 0
	for _, nc := range idle {
		nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := nc.Read(make([]byte, 1)); err == io.EOF || errors.Is(err, syscall.ECONNRESET) {
			closed++
		}
	}
	if closed != 1 {
		t.Errorf("%d idle connections closed to make room, want 1", closed)
	}
}

func TestMaxHeaderBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		limit  int
		header int // bytes in one header value
		want   int
	}{
		{"default allows 16 KiB", 0, 16 << 10, http.StatusOK},
		{"default refuses 100 KiB", 0, 100 << 10, http.StatusRequestHeaderFieldsTooLarge},
		{"set limit refuses more", 4 << 10, 12 << 10, http.StatusRequestHeaderFieldsTooLarge},
		{"set limit allows less", 4 << 10, 2 << 10, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, Config{Heartbeat: -1, MaxHeaderBytes: tt.limit})
			nc := rawConn(t, ts.addr)
			// Written from a goroutine: the server may answer and close
			// before it has read everything.
			go fmt.Fprintf(nc, "GET /healthz HTTP/1.1\r\nHost: %s\r\nX-Big: %s\r\nConnection: close\r\n\r\n",
				ts.addr, strings.Repeat("a", tt.header))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatalf("reading the answer: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("status %d for a %d-byte header, want %d", resp.StatusCode, tt.header, tt.want)
			}
		})
	}
}

func TestShutdownWithSlowBodiesIsPromptAndClean(t *testing.T) {
	t.Parallel()
	// Timeouts far longer than the shutdown: only the shutdown may end
	// the slow clients. (WebSocket connections at shutdown are
	// TestGracefulShutdown's.)
	const shutdownTimeout = 8 * time.Second
	ts := startServer(t, Config{Heartbeat: -1, ShutdownTimeout: shutdownTimeout,
		HandshakeTimeout: time.Minute, ReadTimeout: time.Minute})
	const n = 3
	done := make(chan error, n)
	for range n {
		nc := rawConn(t, ts.addr)
		go func() {
			_, err := slowBody(nc, 100*time.Millisecond)
			done <- err
		}()
	}
	stallHeaders(t, ts.addr)
	waitFor(t, "the slow clients to be counted", func() bool { return ts.HTTPConnCount() == n+1 })
	// Every slow-body request has reached its handler.
	waitFor(t, "the slow requests to be active", func() bool {
		return ts.http.countIn(http.StateActive) == n
	})

	start := time.Now()
	err := ts.stop(t)
	d := time.Since(start)
	if err != nil {
		t.Errorf("Serve returned %v, want nil", err)
	}
	if d > shutdownTimeout/2 {
		t.Errorf("shutdown took %v with slow bodies open, want about %v", d, httpDrainGrace)
	}
	for range n {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("slow body: %v", err)
			}
		case <-time.After(waitTimeout):
			t.Fatal("a slow-body connection is still open after the shutdown")
		}
	}
	ts.logs.waitLog(t, "shutdown complete", nil)
}

// hostRequest sends a request for path with the given Host header through
// h and returns the status.
func hostRequest(h http.Handler, host, path string) int {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	r.Host = host
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code
}

func TestAllowedHosts(t *testing.T) {
	t.Parallel()
	const misdirected = http.StatusMisdirectedRequest
	tests := []struct {
		name  string
		addr  string
		hosts []string
		ok    []string
		bad   []string
	}{
		{"loopback default", "127.0.0.1:5555", nil,
			[]string{"localhost", "localhost:5555", "LOCALHOST:1", "localhost.:5555", "127.0.0.1", "127.0.0.1:8080", "[::1]:5555", "[::1]", "[0:0:0:0:0:0:0:1]:5555"},
			[]string{"evil.example", "evil.example:5555", "localhost.evil.example", "127.0.0.2", "[::2]:5555", "", "10.0.0.1:5555"}},
		{"ipv6 loopback default", "[::1]:5555", nil, []string{"localhost:5555", "[::1]:5555"}, []string{"evil.example"}},
		{"localhost name default", "localhost:5555", nil, []string{"127.0.0.1:5555"}, []string{"evil.example"}},
		{"other 127/8 address", "127.0.0.53:5555", nil, []string{"localhost"}, []string{"evil.example"}},
		{"public default allows any", "0.0.0.0:5555", nil, []string{"evil.example", "anything:1", ""}, nil},
		{"all interfaces default allows any", ":5555", nil, []string{"evil.example"}, nil},
		{"configured", "127.0.0.1:5555", []string{"app.example.com", "*.example.org:8443", "[::1]:5555", "10.0.0.1"},
			[]string{"app.example.com", "APP.Example.COM.", "app.example.com:1", "a.example.org:8443", "[::1]:5555", "10.0.0.1:80"},
			[]string{"localhost", "127.0.0.1:5555", "example.org:8443", "a.example.org:8444", "a.example.org", "[::1]:5556", "evil.example"}},
		{"wildcard", "127.0.0.1:5555", []string{"*"}, []string{"evil.example", "localhost"}, nil},
		{"any host on a port", "127.0.0.1:5555", []string{"*:5555"}, []string{"evil.example:5555"}, []string{"evil.example"}},
		{"character class", "127.0.0.1:5555", []string{"[ab].example.com"}, []string{"a.example.com"}, []string{"c.example.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{Addr: tt.addr, AllowedHosts: tt.hosts}, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			for _, host := range tt.ok {
				if got := hostRequest(s.Handler(), host, "/healthz"); got != http.StatusOK {
					t.Errorf("Host %q: %d, want 200", host, got)
				}
			}
			for _, host := range tt.bad {
				for _, path := range []string{"/healthz", "/", "/ws", "/app.js"} {
					if got := hostRequest(s.Handler(), host, path); got != misdirected {
						t.Errorf("Host %q %s: %d, want 421", host, path, got)
					}
				}
			}
		})
	}
}

func TestDNSRebindingIsRefused(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet) // listens on 127.0.0.1: localhost-only by default
	rec := ts.logs.waitLog(t, "host check", nil)
	if rec["policy"] != hostsLoopbackDefault || fmt.Sprint(rec["allowed_hosts"]) != "[localhost 127.0.0.1 [::1]]" {
		t.Errorf("startup host line %v", rec)
	}

	// A page of evil.example whose name now resolves to 127.0.0.1: the
	// browser connects here and sends Host: evil.example, with a matching
	// Origin, so the origin check alone would let it in.
	upgrade := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n"
	for _, req := range []string{
		"GET /ws HTTP/1.1\r\nHost: evil.example\r\n" + upgrade + "\r\n",
		"GET /ws HTTP/1.1\r\nHost: evil.example:" + port(ts.addr) + "\r\n" + upgrade + "\r\n",
		"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n",
	} {
		nc := rawConn(t, ts.addr)
		io.WriteString(nc, req)
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(string(body), "misdirected") {
			t.Errorf("%q: %d %q, want 421", strings.SplitN(req, "\r\n", 2)[0], resp.StatusCode, body)
		}
	}
	if n := ts.ConnCount(); n != 0 {
		t.Errorf("%d WebSocket connections after refused upgrades", n)
	}
	rec = ts.logs.waitLog(t, "host rejected", map[string]any{"host": "evil.example", "path": "/ws"})
	if rec["level"] != "WARN" || fmt.Sprint(rec["status"]) != "421" {
		t.Errorf("rejection line %v", rec)
	}

	// The same server still answers its own names.
	for _, host := range []string{"localhost", "127.0.0.1"} {
		req, _ := http.NewRequest(http.MethodGet, ts.httpURL()+"/healthz", nil)
		req.Host = host + ":" + port(ts.addr)
		if status, _, _ := httpDo(t, req); status != http.StatusOK {
			t.Errorf("Host %s: %d, want 200", req.Host, status)
		}
	}
	c := dial(t, ts.wsURL(), &wsgate.Options{Header: http.Header{"Origin": {ts.httpURL()}}})
	write(t, c, wsgate.TextMessage, []byte("hi"))
	if _, p := read(t, c); string(p) != "hi" {
		t.Errorf("echo = %q", p)
	}
}

func TestAnyHostWarns(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, AllowedHosts: []string{"*"}})
	rec := ts.logs.waitLog(t, "host check", nil)
	if rec["policy"] != hostsConfigured || fmt.Sprint(rec["allowed_hosts"]) != "[*]" {
		t.Errorf("startup host line %v", rec)
	}
	waitFor(t, "the warning", func() bool {
		for _, r := range ts.logs.records(t) {
			if r["level"] == "WARN" && strings.HasPrefix(r["msg"].(string), "host check off") {
				return true
			}
		}
		return false
	})
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func TestParseHostPattern(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"localhost", "*.example.com", "a.example.com:8443", "[::1]", "[::1]:5555",
		"127.0.0.1:*", "*", "[a-z].example.com", "example.com."} {
		if _, err := parseHostPattern(ok); err != nil {
			t.Errorf("parseHostPattern(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"::1", "example.com:", "example.com:http", "example.com:0", "example.com:70000",
		":5555", "[::1]x", "[a-", "[::1"} {
		if _, err := parseHostPattern(bad); err == nil {
			t.Errorf("parseHostPattern(%q) succeeded, want an error", bad)
		}
	}
	if _, err := (Config{AllowedHosts: []string{"ok.example", "::1"}}).withDefaults(); err == nil ||
		!strings.Contains(err.Error(), "AllowedHosts ::1") {
		t.Errorf("invalid allowed host: %v", err)
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:5555": true, "127.1.2.3:1": true, "[::1]:5555": true, "localhost:5555": true, "LOCALHOST": true,
		"127.0.0.1": true, "0.0.0.0:5555": false, ":5555": false, "[::]:5555": false, "10.0.0.1:5555": false,
		"example.com:5555": false, "": false,
	} {
		if got := isLoopbackAddr(addr); got != want {
			t.Errorf("isLoopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
