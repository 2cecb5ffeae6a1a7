package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/hub"
)

// quiet is a config without heartbeats, so that reads see only echoes.
var quiet = Config{Heartbeat: -1}

func TestEcho(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet)
	c := dial(t, ts.wsURL(), nil)
	big := bytes.Repeat([]byte("0123456789abcdef"), DefaultMaxMessageSize/16) // the largest message allowed
	tests := []struct {
		name string
		typ  wsgate.MessageType
		data []byte
	}{
		{"tutorial text", wsgate.TextMessage, []byte("Hello world!")},
		{"empty text", wsgate.TextMessage, []byte{}},
		{"unicode text", wsgate.TextMessage, []byte("你好，世界 ✓")},
		{"binary", wsgate.BinaryMessage, []byte{0x00, 0x01, 0x02, 0xfe, 0xff}},
		{"binary looking like heartbeat", wsgate.BinaryMessage, []byte(HeartbeatMessage)},
		{"large binary", wsgate.BinaryMessage, big},
		{"large text", wsgate.TextMessage, big},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			write(t, c, tt.typ, tt.data)
			typ, got := read(t, c)
			if typ != tt.typ {
				t.Errorf("echo type = %v, want %v", typ, tt.typ)
			}
			if !bytes.Equal(got, tt.data) {
				t.Errorf("echo = %d bytes %.40q, want %d bytes %.40q", len(got), got, len(tt.data), tt.data)
			}
		})
	}
}

func TestEchoCompression(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, Compression: true})
	c := dial(t, ts.wsURL(), &wsgate.Options{Compression: true})
	if !c.Compressed() {
		t.Fatal("permessage-deflate was not negotiated")
	}
	msg := bytes.Repeat([]byte("compressible "), 1000)
	write(t, c, wsgate.TextMessage, msg)
	if typ, got := read(t, c); typ != wsgate.TextMessage || !bytes.Equal(got, msg) {
		t.Fatalf("echo = %v %d bytes, want text %d bytes", typ, len(got), len(msg))
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	const interval = 50 * time.Millisecond
	const n = 6
	ts := startServer(t, Config{Heartbeat: interval})
	c := dial(t, ts.wsURL(), nil)
	start := time.Now()
	for i := range n {
		typ, p := read(t, c)
		if typ != wsgate.TextMessage || string(p) != HeartbeatMessage {
			t.Fatalf("message %d = %v %q, want text %q", i, typ, p, HeartbeatMessage)
		}
	}
	// n heartbeats take at least n-1 intervals (the first one comes within
	// one); tolerant bounds: a ticker does not send early, and a loaded
	// machine may be late but not by seconds.
	elapsed := time.Since(start)
	if lo, hi := (n-1)*interval*3/4, 5*time.Second; elapsed < lo || elapsed > hi {
		t.Errorf("%d heartbeats took %v, want between %v and %v", n, elapsed, lo, hi)
	}

	// Echoes still work between heartbeats.
	write(t, c, wsgate.TextMessage, []byte("Hello world!"))
	if _, p := readNonHeartbeat(t, c); string(p) != "Hello world!" {
		t.Errorf("echo = %q", p)
	}
}

func TestHeartbeatEveryConnection(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: 20 * time.Millisecond})
	for i := range 3 {
		c := dial(t, ts.wsURL(), nil)
		if _, p := read(t, c); string(p) != HeartbeatMessage {
			t.Fatalf("conn %d: first message %q, want a heartbeat", i, p)
		}
	}
}

func TestHeartbeatDisabled(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet)
	c := dial(t, ts.wsURL(), nil)
	write(t, c, wsgate.TextMessage, []byte("ping"))
	if _, p := read(t, c); string(p) != "ping" {
		t.Fatalf("echo = %q", p)
	}
	// The default interval is 1s: with heartbeats on, one would arrive
	// within 1.5s.
	if typ, p, err := tryRead(c, 1500*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read = %v %q %v, want no message", typ, p, err)
	}
	ts.mu.Lock()
	started := ts.hbStop != nil
	ts.mu.Unlock()
	if started {
		t.Error("heartbeat goroutine started although heartbeats are disabled")
	}
}

func TestOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		allow   []string
		origin  string // "" sends none; "SELF" is replaced by the server's origin
		wantErr bool
	}{
		{"no origin header", nil, "", false},
		{"same origin", nil, "SELF", false},
		{"foreign origin", nil, "http://evil.example", true},
		{"allowlisted", []string{"*.example.com"}, "https://app.example.com", false},
		{"allowlisted on any port", []string{"app.example.com"}, "https://app.example.com:8443", false},
		{"not on the allowlist", []string{"*.example.com"}, "https://example.org", true},
		{"wildcard allows all", []string{"*"}, "http://evil.example", false},
		{"malformed origin", nil, "::not a url", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, Config{Heartbeat: -1, AllowOrigins: tt.allow})
			origin := strings.ReplaceAll(tt.origin, "SELF", ts.httpURL())
			opts := &wsgate.Options{Header: http.Header{}}
			if origin != "" {
				opts.Header.Set("Origin", origin)
			}
			c, err := tryDial(t, ts.wsURL(), opts)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("dial with Origin %q: %v", origin, err)
				}
				write(t, c, wsgate.TextMessage, []byte("hi"))
				if _, p := read(t, c); string(p) != "hi" {
					t.Fatalf("echo = %q", p)
				}
				ts.logs.waitLog(t, "ws open", map[string]any{"path": "/ws"})
				return
			}
			if err == nil {
				t.Fatalf("dial with Origin %q succeeded, want 403", origin)
			}
			if status, body := handshakeStatus(t, err); status != http.StatusForbidden || body == "" {
				t.Fatalf("status %d body %q, want 403 with a message", status, body)
			}
			rec := ts.logs.waitLog(t, "ws origin rejected", map[string]any{"origin": origin})
			if rec["level"] != "WARN" {
				t.Errorf("origin rejection logged at %v, want WARN", rec["level"])
			}
		})
	}
}

func TestWildcardOriginWarns(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, AllowOrigins: []string{"*"}})
	waitFor(t, "startup warning", func() bool {
		for _, r := range ts.logs.records(t) {
			if r["level"] == "WARN" && strings.Contains(r["msg"].(string), "origin check disabled") {
				return true
			}
		}
		return false
	})
}

func TestMaxConns(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, MaxConns: 2})
	c1 := dial(t, ts.wsURL(), nil)
	dial(t, ts.wsURL(), nil)

	_, err := tryDial(t, ts.wsURL(), nil)
	if err == nil {
		t.Fatal("third connection accepted, want 503")
	}
	if status, body := handshakeStatus(t, err); status != http.StatusServiceUnavailable || !strings.Contains(body, "too many connections") {
		t.Fatalf("third connection: status %d body %q, want 503 too many connections", status, body)
	}
	rec := ts.logs.waitLog(t, "ws refused", map[string]any{"status": 503})
	if rec["level"] != "WARN" {
		t.Errorf("503 logged at %v, want WARN", rec["level"])
	}
	// A plain request gets the same answer before any upgrade check.
	if status, hdr, body := httpGet(t, ts.httpURL()+"/ws"); status != http.StatusServiceUnavailable ||
		!strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") || body == "" {
		t.Fatalf("GET /ws over the limit: %d %q %q", status, hdr.Get("Content-Type"), body)
	}

	// Once a connection has ended, its slot is free again.
	c1.Close()
	waitDone(t, c1)
	waitFor(t, "the slot to be released", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		return ts.active == 1
	})
	dial(t, ts.wsURL(), nil)
}

func TestMaxMessageSize(t *testing.T) {
	t.Parallel()
	const limit = 1024
	ts := startServer(t, Config{Heartbeat: -1, MaxMessageSize: limit})
	c := dial(t, ts.wsURL(), nil)
	write(t, c, wsgate.BinaryMessage, make([]byte, limit))
	if _, p := read(t, c); len(p) != limit {
		t.Fatalf("echo of %d bytes = %d bytes", limit, len(p))
	}
	write(t, c, wsgate.BinaryMessage, make([]byte, limit+1))
	waitDone(t, c)
	if code := wsgate.CloseStatus(c.Err()); code != wsgate.StatusMessageTooBig {
		t.Fatalf("close code %v (%v), want 1009", code, c.Err())
	}
	ts.logs.waitLog(t, "ws close", map[string]any{"code": 1009})
}

func TestDefaultMaxMessageSize(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet)
	c := dial(t, ts.wsURL(), nil)
	msg := make([]byte, DefaultMaxMessageSize)
	msg[len(msg)-1] = 7
	write(t, c, wsgate.BinaryMessage, msg)
	if _, p := read(t, c); !bytes.Equal(p, msg) {
		t.Fatalf("echo of %d bytes: %d bytes", len(msg), len(p))
	}
	write(t, c, wsgate.BinaryMessage, make([]byte, DefaultMaxMessageSize+1))
	waitDone(t, c)
	if code := wsgate.CloseStatus(c.Err()); code != wsgate.StatusMessageTooBig {
		t.Fatalf("one byte more: %v, want 1009", c.Err())
	}
}

// Over the memory budget the connection holding the most is closed; the
// others keep being served.
func TestMemoryBudget(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, MaxMessageSize: 4 << 20, MemoryBudget: 5 << 19})
	good := dial(t, ts.wsURL(), nil)
	// Two clients send parts of 2 MiB messages and stop: 3 MiB of
	// reassembly buffers (2 MiB and 1 MiB) against a 2.5 MiB budget.
	for i, n := range []int{1900 << 10, 900 << 10} {
		nc, _ := rawUpgrade(t, ts.addr)
		f := maskedFrame(0x2, make([]byte, 2<<20))
		if _, err := nc.Write(f[:n]); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			waitFor(t, "the first message to be held", func() bool { return ts.Budget().Used() >= 1900<<10 })
		}
	}
	rec := ts.logs.waitLog(t, "ws close", map[string]any{"code": 1009})
	if !strings.Contains(fmt.Sprint(rec["err"]), "memory budget") {
		t.Fatalf("close line %v, want the memory budget as the cause", rec)
	}
	if got := ts.Budget().Evictions(); got != 1 {
		t.Fatalf("%d evictions, want 1", got)
	}
	write(t, good, wsgate.TextMessage, []byte("still served"))
	if _, p := readNonHeartbeat(t, good); string(p) != "still served" {
		t.Fatalf("got %q", p)
	}
	if n := ts.ConnCount(); n != 2 {
		t.Fatalf("%d connections open, want 2 (the good one and the lighter heavy one)", n)
	}
}

func TestBadHandshake(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet)
	upgrade := http.Header{
		"Connection":            {"Upgrade"},
		"Upgrade":               {"websocket"},
		"Sec-Websocket-Key":     {"dGhlIHNhbXBsZSBub25jZQ=="},
		"Sec-Websocket-Version": {"13"},
	}
	with := func(k, v string) http.Header {
		h := upgrade.Clone()
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
		return h
	}
	tests := []struct {
		name   string
		method string
		header http.Header
		want   int
	}{
		{"plain GET", http.MethodGet, nil, http.StatusUpgradeRequired},
		{"wrong version", http.MethodGet, with("Sec-Websocket-Version", "8"), http.StatusUpgradeRequired},
		{"missing key", http.MethodGet, with("Sec-Websocket-Key", ""), http.StatusBadRequest},
		{"POST", http.MethodPost, upgrade, http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, ts.httpURL()+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.header {
				req.Header[k] = v
			}
			status, hdr, body := httpDo(t, req)
			if status != tt.want {
				t.Errorf("status %d, want %d", status, tt.want)
			}
			if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q, want text/plain", ct)
			}
			if strings.TrimSpace(body) == "" {
				t.Error("empty body, want a message")
			}
		})
	}
}

func TestHealthAndReady(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet)
	for _, tt := range []struct{ path, body string }{{"/healthz", "ok"}, {"/readyz", "ready"}} {
		status, _, body := httpGet(t, ts.httpURL()+tt.path)
		if status != http.StatusOK || strings.TrimSpace(body) != tt.body {
			t.Errorf("GET %s = %d %q, want 200 %q", tt.path, status, body, tt.body)
		}
	}
}

func TestPage(t *testing.T) {
	t.Chdir(t.TempDir()) // the page is embedded: any working directory works
	ts := startServer(t, quiet)
	tests := []struct {
		path, ctype string
		contains    []string
	}{
		{"/", "text/html", []string{`id="open"`, `id="close"`, `id="send"`, `id="input"`, `value="Hello world!"`,
			`id="url"`, `id="output"`, `id="state"`, `id="heartbeats"`, `id="reconnect"`, `id="binary"`, "app.js", "style.css",
			`id="ps-url"`, `id="ps-token"`, `id="ps-connect"`, `id="ps-disconnect"`, `id="ps-channel"`, `id="ps-join"`,
			`id="ps-leave"`, `id="ps-message"`, `id="ps-publish"`, `id="ps-presence"`, `id="ps-output"`, `id="ps-state"`,
			"go run ./cmd/wsgate " + DemoFlags}},
		{"/app.js", "text/javascript", []string{"textContent", "arraybuffer"}},
		{"/style.css", "text/css", []string{"#output"}},
	}
	for _, tt := range tests {
		status, hdr, body := httpGet(t, ts.httpURL()+tt.path)
		if status != http.StatusOK {
			t.Errorf("GET %s = %d", tt.path, status)
			continue
		}
		if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, tt.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tt.path, ct, tt.ctype)
		}
		if hdr.Get("Content-Security-Policy") == "" {
			t.Errorf("GET %s: no Content-Security-Policy", tt.path)
		}
		for _, s := range tt.contains {
			if !strings.Contains(body, s) {
				t.Errorf("GET %s: body lacks %q", tt.path, s)
			}
		}
	}
	if strings.Contains(mustGet(t, ts.httpURL()+"/app.js"), "innerHTML") {
		t.Error("app.js uses innerHTML")
	}
	if status, _, _ := httpGet(t, ts.httpURL()+"/nope"); status != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404", status)
	}
}

func mustGet(t *testing.T, url string) string {
	t.Helper()
	_, _, body := httpGet(t, url)
	return body
}

func TestConnectionLogs(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet)
	origin := ts.httpURL()
	c := dial(t, ts.wsURL(), &wsgate.Options{Header: http.Header{"Origin": {origin}}})
	write(t, c, wsgate.TextMessage, []byte("Hello world!"))
	read(t, c)
	c.CloseWithStatus(wsgate.StatusNormalClosure, "bye")
	waitDone(t, c)

	open := ts.logs.waitLog(t, "ws open", map[string]any{"path": "/ws"})
	id := open["id"]
	if id == nil || open["remote"] != c.LocalAddr().String() {
		t.Errorf("open line %v: want id and remote %v", open, c.LocalAddr())
	}
	closed := ts.logs.waitLog(t, "ws close", map[string]any{"id": id})
	want := map[string]any{
		"remote": c.LocalAddr().String(), "msgs_in": 1, "msgs_out": 1, "bytes_in": 12, "bytes_out": 12,
		"code": 1000, "reason": "bye", "by_client": true,
	}
	for k, v := range want {
		if got := closed[k]; fmt.Sprint(got) != fmt.Sprint(v) {
			t.Errorf("close line %s = %v, want %v", k, got, v)
		}
	}
	if _, ok := closed["duration"]; !ok {
		t.Error("close line has no duration")
	}
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	ts := startServer(t, Config{Heartbeat: -1, ShutdownTimeout: 20 * time.Second})
	// A small receive queue makes the client stop reading early; a large
	// send queue lets it keep writing while the server pushes back.
	c := dial(t, ts.wsURL(), &wsgate.Options{RecvQueueMessages: 4, RecvQueueBytes: 256 << 10, SendQueueBytes: 64 << 20})

	// Send a burst and stop reading, so that echoes pile up in the socket
	// buffers, the client's receive queue and the server's send queue,
	// until the server stops reading a client that does not read.
	const n, size = 192, 64 << 10
	for i := range n {
		msg := bytes.Repeat([]byte{byte(i)}, size)
		write(t, c, wsgate.BinaryMessage, msg)
	}
	var accepted uint64
	var queued int
	waitFor(t, "the server to stop accepting echoes with some queued", func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		for sc := range ts.conns {
			st := sc.Stats()
			steady := st.MessagesOut == accepted && st.QueuedBytes > 0
			accepted, queued = st.MessagesOut, st.QueuedBytes
			if steady {
				time.Sleep(50 * time.Millisecond)
				return sc.Stats().MessagesOut == accepted
			}
			time.Sleep(20 * time.Millisecond)
			return false
		}
		return false
	})
	if accepted == 0 || accepted == n {
		t.Fatalf("the server accepted %d of %d echoes; want it to stop reading a client that does not read", accepted, n)
	}
	t.Logf("%d echoes accepted, %d bytes still queued on the server at shutdown", accepted, queued)

	// Everything accepted before the shutdown arrives before the close.
	start := time.Now()
	ts.cancel()
	for i := range int(accepted) {
		typ, p := read(t, c)
		if typ != wsgate.BinaryMessage || len(p) != size || p[0] != byte(i) || p[size-1] != byte(i) {
			t.Fatalf("message %d: %v %d bytes starting %d, want binary %d bytes of %d", i, typ, len(p), p[0], size, i)
		}
	}
	if _, _, err := tryRead(c, waitTimeout); wsgate.CloseStatus(err) != wsgate.StatusGoingAway {
		t.Fatalf("after the echoes: %v, want close 1001", err)
	}
	var ce *wsgate.CloseError
	if errors.As(c.Err(), &ce); ce == nil || ce.Reason != "server shutting down" || !ce.Remote {
		t.Errorf("close error %#v, want remote 1001 \"server shutting down\"", ce)
	}
	if err := ts.stop(t); err != nil {
		t.Errorf("Serve returned %v, want nil", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("shutdown took %v, longer than its 20s timeout", d)
	}
	ts.logs.waitLog(t, "ws close", map[string]any{"code": 1001, "msgs_out": float64(accepted)})
}

func TestShutdownCutsOffStragglers(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	ts := startServer(t, Config{Heartbeat: -1, ShutdownTimeout: timeout})
	// A client that completes the handshake and then never answers.
	nc, br := rawUpgrade(t, ts.addr)
	waitFor(t, "the connection to register", func() bool { return ts.ConnCount() == 1 })

	start := time.Now()
	ts.cancel()
	// The shutdown is under way: readiness fails and new sockets are refused.
	waitFor(t, "/readyz to fail", func() bool {
		rec := httptest.NewRecorder()
		ts.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, ts.httpURL()+"/readyz", nil))
		return rec.Code == http.StatusServiceUnavailable
	})
	rec := httptest.NewRecorder()
	ts.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, ts.httpURL()+"/ws", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/ws during shutdown = %d, want 503", rec.Code)
	}

	// The client gets the close frame (1001), then the TCP connection ends.
	frame := make([]byte, 4)
	if _, err := io.ReadFull(br, frame); err != nil {
		t.Fatalf("reading close frame: %v", err)
	}
	if frame[0] != 0x88 || frame[2] != 0x03 || frame[3] != 0xe9 {
		t.Fatalf("frame % x, want a close frame with 1001", frame)
	}
	nc.SetReadDeadline(time.Now().Add(waitTimeout))
	if _, err := io.Copy(io.Discard, br); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("waiting for the server to close the connection: %v", err)
	}
	err := ts.stop(t)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Serve returned %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > timeout+stragglerGrace+time.Second {
		t.Errorf("shutdown took %v with a %v timeout", d, timeout)
	}
	ts.logs.waitLog(t, "shutdown timeout: closing remaining connections", map[string]any{"conns": 1})
}

func TestShutdownIdempotent(t *testing.T) {
	t.Parallel()
	ts := startServer(t, quiet)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if err := ts.stop(t); err != nil {
		t.Fatalf("Serve after Shutdown returned %v", err)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	log, logs := newTestLogger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{Addr: "127.0.0.1:0", Heartbeat: -1, Version: "v9.9.9"}, log)
	}()
	rec := logs.waitLog(t, "wsgate listening", map[string]any{"version": "v9.9.9"})
	addr, _ := rec["addr"].(string)
	c := dial(t, "ws://"+addr+"/ws", nil)
	write(t, c, wsgate.TextMessage, []byte("Hello world!"))
	if _, p := read(t, c); string(p) != "Hello world!" {
		t.Fatalf("echo = %q", p)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return after cancel")
	}
	waitDone(t, c)
	if code := wsgate.CloseStatus(c.Err()); code != wsgate.StatusGoingAway {
		t.Errorf("client closed with %v, want 1001", code)
	}
}

func TestRunErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	log, _ := newTestLogger()
	tests := []struct {
		name string
		cfg  Config
	}{
		{"address in use", Config{Addr: busy.Addr().String()}},
		{"bad address", Config{Addr: "127.0.0.1:notaport"}},
		{"bad origin pattern", Config{Addr: "127.0.0.1:0", AllowOrigins: []string{"[a-"}}},
		{"negative max message size", Config{Addr: "127.0.0.1:0", MaxMessageSize: -1}},
		{"negative shutdown timeout", Config{Addr: "127.0.0.1:0", ShutdownTimeout: -time.Second}},
		{"read timeout shorter than handshake", Config{Addr: "127.0.0.1:0", ReadTimeout: time.Second, HandshakeTimeout: 2 * time.Second}},
		{"header limit over 64 KiB", Config{Addr: "127.0.0.1:0", MaxHeaderBytes: 64<<10 + 1}},
		{"bad allowed host", Config{Addr: "127.0.0.1:0", AllowedHosts: []string{"a.example:x"}}},
		{"origin with a scheme", Config{Addr: "127.0.0.1:0", AllowOrigins: []string{"https://a.example"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := Run(ctx, tt.cfg, log); err == nil {
				t.Fatal("Run succeeded, want an error")
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	got, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Addr: "0.0.0.0:5555", Version: "dev", Heartbeat: time.Second, MaxConns: 10000,
		MaxMessageSize: 64 << 10, MemoryBudget: 4 << 30, HandshakeTimeout: 10 * time.Second, ShutdownTimeout: 10 * time.Second,
		PingInterval: wsgate.DefaultPingInterval, PingTimeout: wsgate.DefaultPingTimeout,
		AllowOrigins: []string{}, AllowedHosts: []string{},
		ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second, IdleTimeout: time.Minute,
		MaxHeaderBytes: 32 << 10, MaxHTTPConns: 1024, MemoryRelease: wsgate.DefaultMemoryQuiet,
		Channels: &hub.ChannelConfig{Default: hub.ChannelOptions{AllowSubscribeForClient: true}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
	eff, err := Config{}.Effective()
	if err != nil {
		t.Fatal(err)
	}
	want.AllowedHosts = []string{"*"}
	if !reflect.DeepEqual(eff, want) {
		t.Errorf("effective:\n got %+v\nwant %+v", eff, want)
	}
	if eff, _ := (Config{Addr: "127.0.0.1:1"}).Effective(); !reflect.DeepEqual(eff.AllowedHosts, []string{"localhost", "127.0.0.1", "[::1]"}) {
		t.Errorf("effective allowed hosts on loopback: %q", eff.AllowedHosts)
	}
	o := got.wsOptions()
	if o.ReadLimit != 64<<10 || o.InsecureSkipOriginCheck || o.SendQueueBytes != 128<<10 {
		t.Errorf("wsOptions = %+v", o)
	}
	if o := (Config{PingInterval: -1, AllowOrigins: []string{" *"}}).wsOptions(); o.PingInterval != -1 {
		t.Errorf("negative PingInterval gave %v, want -1", o.PingInterval)
	}
	if c, _ := (Config{AllowOrigins: []string{" * ", ""}}).withDefaults(); !c.wsOptions().InsecureSkipOriginCheck {
		t.Error(`"*" does not disable the origin check`)
	}
}

func TestConfigFieldErrors(t *testing.T) {
	t.Parallel()
	_, err := Config{ReadTimeout: time.Second, WriteTimeout: -1, MaxHeaderBytes: 1 << 20, AllowedHosts: []string{"::1"}, EventLoops: -2}.withDefaults()
	var fields []string
	for _, fe := range FieldErrors(err) {
		fields = append(fields, fe.Field)
	}
	want := []string{"WriteTimeout", "ReadTimeout", "MaxHeaderBytes", "AllowedHosts", "EventLoops"}
	if !reflect.DeepEqual(fields, want) {
		t.Errorf("invalid fields %q, want %q (error %v)", fields, want, err)
	}
}
