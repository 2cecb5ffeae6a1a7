package wsgate_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// A client that floods pings and never reads costs the server a bounded
// amount of memory: the server stops reading it once its output is stuck,
// and answers only the latest ping meanwhile. Others are not held up.
func TestPingFloodIsBounded(t *testing.T) {
	budget := wsgate.NewBudget(1 << 40) // only to measure what the connection holds
	url, conns := testServer(t, &wsgate.Options{Budget: budget, PingInterval: -1})
	peer := rawDial(t, url)
	server := <-conns
	t.Cleanup(func() { server.CloseNow() })
	good := dial(t, echoServer(t, nil), nil)

	ping := frame(true, 0x9, bytes.Repeat([]byte("p"), 125))
	burst := bytes.Repeat(ping, 512) // 66 KiB
	deadline := time.Now().Add(time.Second)
	sent := 0
	for time.Now().Before(deadline) {
		peer.nc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := peer.nc.Write(burst)
		sent += n
		if err != nil {
			break // the server stopped reading: the socket buffers are full
		}
	}
	held := server.Stats().Buffered
	t.Logf("sent %d KiB of pings; the server holds %d KiB", sent>>10, held>>10)
	if held > 1<<20 {
		t.Fatalf("the server holds %d bytes for a ping flood, want at most 1 MiB", held)
	}
	if sent > 64<<20 {
		t.Fatalf("the server read %d MiB of pings from a client that never reads", sent>>20)
	}
	write(t, good, wsgate.TextMessage, []byte("still served"))
	if _, p := read(t, good); string(p) != "still served" {
		t.Fatalf("got %q", p)
	}
}

// A connection whose timeouts are shorter than every other's gets its
// timers checked at its own pace at once, not after the sweeper's current,
// longer period (up to a second) has run out.
func TestShortTimeoutsAmongLongOnes(t *testing.T) {
	pair(t, nil, nil) // default timeouts: the sweeper ticks every second
	time.Sleep(50 * time.Millisecond)
	url, conns := testServer(t, &wsgate.Options{PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond})
	rawDial(t, url) // never answers pings
	server := <-conns
	start := time.Now()
	select {
	case <-server.Done():
	case <-time.After(waitLimit):
		t.Fatal("a peer that never answers pings kept the connection alive")
	}
	// Due after about 150 ms; the sweeper's old period would make it about a second.
	if d := time.Since(start); d > 600*time.Millisecond {
		t.Fatalf("closed after %v, want about 150ms", d)
	}
	if ce := closeErr(t, server); !errors.Is(ce, wsgate.ErrPingTimeout) {
		t.Fatalf("got %v, want ErrPingTimeout", ce)
	}
}

// keepalive counts frames: a peer that announces a large frame and then
// trickles it byte by byte is declared dead.
func TestTricklingPeerFailsKeepalive(t *testing.T) {
	url, conns := testServer(t, &wsgate.Options{PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond, MessageTimeout: -1})
	peer := rawDial(t, url)
	server := <-conns
	hdr := frame(true, 0x2, make([]byte, 1<<20))[:14] // header and key of a 1 MiB frame
	peer.send(hdr)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := peer.nc.Write([]byte{0}); err != nil {
				return
			}
		}
	}()
	select {
	case <-server.Done():
	case <-time.After(time.Second):
		t.Fatal("a peer trickling one byte every 20ms kept the connection alive")
	}
	if ce := closeErr(t, server); !errors.Is(ce, wsgate.ErrPingTimeout) {
		t.Fatalf("got %v, want ErrPingTimeout", ce)
	}
}

// A message must finish within MessageTimeout, even when its frames keep
// the connection alive.
func TestSlowMessageIsCut(t *testing.T) {
	url, conns := testServer(t, &wsgate.Options{MessageTimeout: 200 * time.Millisecond})
	peer := rawDial(t, url)
	server := <-conns
	go func() {
		peer.nc.Write(frame(false, 0x2, []byte("first")))
		for range 50 {
			if _, err := peer.nc.Write(frame(false, 0x0, []byte("x"))); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if code := peer.expectClose(); code != wsgate.StatusPolicyViolation {
		t.Fatalf("close code %v, want 1008", code)
	}
	if ce := closeErr(t, server); !errors.Is(ce, wsgate.ErrMessageTimeout) || ce.Code != wsgate.StatusPolicyViolation {
		t.Fatalf("got %v, want 1008 ErrMessageTimeout", ce)
	}
}

// Over the budget, the connections holding the most are closed and the
// others keep working.
func TestBudgetEvictsTheHeaviest(t *testing.T) {
	budget := wsgate.NewBudget(5 << 19) // 2.5 MiB
	url, conns := testServer(t, &wsgate.Options{Budget: budget, ReadLimit: 8 << 20, OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
		c.Write(context.Background(), typ, p)
	}})
	good := dial(t, url, nil)
	goodServer := <-conns
	t.Cleanup(func() { goodServer.CloseNow() })

	// Two peers send parts of 2 MiB messages and stop: 3 MiB of reassembly
	// buffers against a 2.5 MiB budget.
	var heavy []*rawPeer
	var servers []*wsgate.Conn
	for i := range 2 {
		p := rawDial(t, url)
		s := <-conns
		t.Cleanup(func() { s.CloseNow() })
		f := frame(true, 0x2, make([]byte, 2<<20))
		if i == 0 {
			p.send(f[:len(f)-100<<10])
			// All of it is held before the second one pushes the total over.
			waitFor(t, "the first message to be held", func() bool { return budget.Used() >= 1900<<10 })
		} else {
			p.send(f[:900<<10]) // the second holds less: a 1 MiB buffer against 2 MiB
		}
		heavy, servers = append(heavy, p), append(servers, s)
	}
	if code := heavy[0].expectClose(); code != wsgate.StatusMessageTooBig {
		t.Fatalf("the heaviest got %v, want 1009", code)
	}
	if ce := closeErr(t, servers[0]); !errors.Is(ce, wsgate.ErrMemoryBudget) {
		t.Fatalf("got %v, want ErrMemoryBudget", ce)
	}
	if budget.Evictions() != 1 {
		t.Fatalf("%d evictions, want 1", budget.Evictions())
	}
	select {
	case <-servers[1].Done():
		t.Fatalf("the lighter connection was closed too: %v", servers[1].Err())
	default:
	}
	write(t, good, wsgate.TextMessage, []byte("still served"))
	if _, p := read(t, good); string(p) != "still served" {
		t.Fatalf("got %q", p)
	}
	waitFor(t, "the budget to be given back", func() bool { return budget.Used() < 5<<19 })
}

// A peer that stops reading holds at most its send queue; over the budget
// it is the one closed, with 1008.
func TestBudgetEvictsStalledReader(t *testing.T) {
	budget := wsgate.NewBudget(1 << 20)
	c := stalledServerConn(t, &wsgate.Options{Budget: budget, SendQueueBytes: 8 << 20, PingInterval: -1})
	msg := make([]byte, 64<<10)
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		err = c.Write(context.Background(), wsgate.BinaryMessage, msg)
		time.Sleep(time.Millisecond)
	}
	if ce := closeErr(t, c); !errors.Is(ce, wsgate.ErrMemoryBudget) || ce.Code != wsgate.StatusPolicyViolation {
		t.Fatalf("got %v, want 1008 ErrMemoryBudget", ce)
	}
}

// Past half of the budget, new connections do not get compression.
func TestBudgetRefusesCompression(t *testing.T) {
	budget := wsgate.NewBudget(1 << 20)
	opts := &wsgate.Options{Budget: budget, Compression: true, ReadLimit: 4 << 20}
	url, conns := testServer(t, opts)
	first := dial(t, url, &wsgate.Options{Compression: true})
	s := <-conns
	t.Cleanup(func() { s.CloseNow() })
	if !first.Compressed() {
		t.Fatal("no compression under an empty budget")
	}
	p := rawDial(t, url)
	ps := <-conns
	t.Cleanup(func() { ps.CloseNow() })
	f := frame(true, 0x2, make([]byte, 1<<20))
	p.send(f[:700<<10]) // hold 700 KiB of the 1 MiB budget
	waitFor(t, "the budget to fill", func() bool { return budget.Used() > 512<<10 })
	second := dial(t, url, &wsgate.Options{Compression: true})
	s2 := <-conns
	t.Cleanup(func() { s2.CloseNow() })
	if second.Compressed() {
		t.Fatal("compression negotiated past half of the budget")
	}
}

// A compressed message that inflates far beyond one step is delivered
// whole, on both transports.
func TestLargeCompressedMessage(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		opts := &wsgate.Options{Compression: true, ReadLimit: 8 << 20, NetDialContext: copts.NetDialContext}
		server, client := pair(t, &wsgate.Options{Compression: true, ReadLimit: 8 << 20}, opts)
		msg := bytes.Repeat([]byte("compressible "), 300_000) // 3.9 MiB
		for range 2 {
			// Streamed: Write sends messages over 1 MiB uncompressed.
			w, err := client.Writer(context.Background(), wsgate.TextMessage)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(msg); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			typ, got := read(t, server)
			if typ != wsgate.TextMessage || !bytes.Equal(got, msg) {
				t.Fatalf("got %v %d bytes, want text %d bytes", typ, len(got), len(msg))
			}
		}
	})
}

// failConn is a net.Conn whose writes fail after the first n bytes.
type failConn struct {
	net.Conn
	mu sync.Mutex
	n  int
}

func (f *failConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, errors.New("injected write failure")
	}
	f.n -= len(p)
	return len(p), nil
}

// A write that did not happen is an error, on the reader-goroutine
// transport too.
func TestFailedWriteIsAnError(t *testing.T) {
	a, b := net.Pipe()
	t.Cleanup(func() { b.Close() })
	go io.Copy(io.Discard, b)
	c := wsgate.Wrap(&failConn{Conn: a, n: 100}, wsgate.RoleServer, &wsgate.Options{PingInterval: -1})
	t.Cleanup(func() { c.CloseNow(); waitDone(t, c) })
	if err := c.Write(context.Background(), wsgate.BinaryMessage, make([]byte, 10)); err != nil {
		t.Fatalf("first write: %v", err)
	}
	err := c.Write(context.Background(), wsgate.BinaryMessage, make([]byte, 1000))
	if err == nil || !errors.Is(err, wsgate.ErrClosed) {
		t.Fatalf("a failed write returned %v, want an error matching ErrClosed", err)
	}
	if ce := closeErr(t, c); ce.Code != wsgate.StatusAbnormalClosure || !strings.Contains(ce.Error(), "injected") {
		t.Fatalf("got %v", ce)
	}
}

// Close never blocks the caller, even on the reader-goroutine transport
// with a peer that reads nothing.
func TestCloseNeverBlocks(t *testing.T) {
	a, b := net.Pipe() // synchronous: a write waits for a read that never comes
	t.Cleanup(func() { b.Close() })
	c := wsgate.Wrap(a, wsgate.RoleServer, &wsgate.Options{PingInterval: -1, WriteTimeout: 10 * time.Second, CloseTimeout: 100 * time.Millisecond})
	go c.Write(context.Background(), wsgate.BinaryMessage, []byte("stuck")) // blocks in the pipe
	time.Sleep(20 * time.Millisecond)
	returned := make(chan struct{})
	go func() {
		c.Close()
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(time.Second):
		t.Fatal("Close blocked on a peer that does not read")
	}
	c.CloseNow()
	waitDone(t, c)
}

// OnOpen runs first, even when frames arrive with the handshake, and
// OnClose last; a panicking OnClose does not take the loop down.
func TestCallbackOrder(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	closed := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wsgate.Upgrade(w, r, &wsgate.Options{
			OnOpen: func(c *wsgate.Conn) {
				c.SetValue("session-1")
				record("open")
			},
			OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
				record(fmt.Sprintf("message %s %v", p, c.Value()))
			},
			OnClose: func(c *wsgate.Conn, err error) {
				record("close")
				close(closed)
				panic("OnClose bug")
			},
		})
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	msg := append([]byte(req), frame(true, 0x1, []byte("early"))...)
	msg = append(msg, frame(true, 0x8, []byte{0x03, 0xE8})...)
	nc.Write(msg)
	select {
	case <-closed:
	case <-time.After(waitLimit):
		t.Fatal("no close")
	}
	mu.Lock()
	got := strings.Join(events, ", ")
	mu.Unlock()
	if got != "open, message early session-1, close" {
		t.Fatalf("callbacks ran as %q", got)
	}
	// The loop that ran the panicking OnClose still serves.
	c := dial(t, echoServer(t, nil), nil)
	write(t, c, wsgate.TextMessage, []byte("alive"))
	if _, p := read(t, c); string(p) != "alive" {
		t.Fatalf("got %q", p)
	}
}

// The origin check: the scheme is part of the origin, default ports are
// filled in, absolute-form targets and bodies are refused.
func TestHandshakeHardening(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, &wsgate.Options{TrustForwardedProto: true})
		if err == nil {
			c.CloseNow()
		}
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	_, port, _ := net.SplitHostPort(host)
	cases := []struct {
		name    string
		target  string
		hdr     string
		want    int
		reqHost string // Host header, when not the server's address
	}{
		{"same origin", "/", "Origin: http://" + host + "\r\n", 101, ""},
		{"default port filled in", "/", "Origin: http://example.com\r\n", 101, "example.com:80"},
		{"default https port filled in", "/", "Origin: https://example.com:443\r\nX-Forwarded-Proto: https\r\n", 101, "example.com"},
		{"https page, plain request (TLS ends at a proxy)", "/", "Origin: https://" + host + "\r\n", 101, ""},
		{"http page, request over https", "/", "Origin: http://" + host + "\r\nX-Forwarded-Proto: https\r\n", 403, ""},
		{"other port", "/", "Origin: http://127.0.0.1:1\r\n", 403, ""},
		{"default port", "/", "Origin: http://127.0.0.1\r\nX-Forwarded-Proto: http\r\n", 403, ""},
		{"non-web scheme", "/", "Origin: file://" + host + "\r\n", 403, ""},
		{"absolute-form target", "http://evil.example:" + port + "/", "Origin: http://evil.example:" + port + "\r\n", 400, ""},
		{"body", "/", "Content-Length: 5\r\n", 400, ""},
		{"chunked body", "/", "Transfer-Encoding: chunked\r\n", 400, ""},
	}
	bodies := map[string]string{"body": "hello", "chunked body": "0\r\n\r\n"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := net.Dial("tcp", host)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			reqHost := host
			if tc.reqHost != "" {
				reqHost = tc.reqHost
			}
			fmt.Fprintf(nc, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n%s", tc.target, reqHost, tc.hdr, bodies[tc.name])
			nc.SetReadDeadline(time.Now().Add(waitLimit))
			resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// The handler's headers go out with the 101; DialWithResponse shows them,
// and shows a refusal's too.
func TestHandshakeHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("refuse") != "" {
			w.Header().Set("X-Reason", "nope")
			http.Error(w, "go away", http.StatusForbidden)
			return
		}
		w.Header().Set("Set-Cookie", "session=abc; HttpOnly")
		w.Header().Set("Sec-WebSocket-Accept", "forged") // decided by the handshake: dropped
		w.Header().Set("X-Bad", "a\r\nInjected: yes")    // would break the response: dropped
		c, err := wsgate.Upgrade(w, r, nil)
		if err == nil {
			c.Close()
		}
	}))
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	ctx := context.Background()
	c, resp, err := wsgate.DialWithResponse(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow(); waitDone(t, c) })
	if got := resp.Header.Get("Set-Cookie"); got != "session=abc; HttpOnly" {
		t.Fatalf("Set-Cookie %q", got)
	}
	if resp.Header.Get("Injected") != "" || resp.Header.Get("X-Bad") != "" {
		t.Fatal("a header with a line break went out")
	}
	_, resp, err = wsgate.DialWithResponse(ctx, url+"?refuse=1", nil)
	var he *wsgate.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != 403 || he.Header.Get("X-Reason") != "nope" || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("refusal: %v %+v", err, resp)
	}
}

// Dial refuses headers that the handshake sets, and a server that answers
// with an endless head.
func TestDialLimits(t *testing.T) {
	ctx := context.Background()
	for _, h := range []string{"Host", "Upgrade", "Sec-WebSocket-Key", "sec-websocket-extensions", "Connection", "Content-Length"} {
		_, err := wsgate.Dial(ctx, "ws://127.0.0.1:1/", &wsgate.Options{Header: http.Header{h: {"x"}}})
		if err == nil || !strings.Contains(err.Error(), "set by the handshake") {
			t.Errorf("header %s: %v", h, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(waitLimit))
		bufio.NewReader(nc).ReadString('\n')
		io.WriteString(nc, "HTTP/1.1 101 Switching Protocols\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		for range 200 {
			if _, err := io.WriteString(nc, line); err != nil {
				return
			}
		}
	}()
	_, err = wsgate.Dial(ctx, "ws://"+ln.Addr().String()+"/", nil)
	if !errors.Is(err, wsgate.ErrBadHandshake) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("got %v, want a handshake error about the response size", err)
	}
}

func TestPing(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		_, client := pair(t, nil, copts)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		rtt, err := client.Ping(ctx)
		if err != nil || rtt <= 0 || rtt > waitLimit {
			t.Fatalf("Ping = %v, %v", rtt, err)
		}
	})
	// A peer that never answers: ctx ends the wait.
	c := stalledServerConn(t, &wsgate.Options{PingInterval: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ping to a silent peer: %v", err)
	}
	c.CloseNow()
	if _, err := c.Ping(context.Background()); !errors.Is(err, wsgate.ErrClosed) {
		t.Fatalf("Ping after close: %v", err)
	}
}

// A streamed message arrives whole; other writers wait for it.
func TestWriter(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprint("compression=", compress), func(t *testing.T) {
			opts := &wsgate.Options{Compression: compress, ReadLimit: 4 << 20}
			server, client := pair(t, opts, opts)
			w, err := server.Writer(context.Background(), wsgate.TextMessage)
			if err != nil {
				t.Fatal(err)
			}
			other := make(chan error, 1)
			go func() { other <- server.Write(context.Background(), wsgate.BinaryMessage, []byte("after")) }()
			var want bytes.Buffer
			for i := range 10_000 {
				s := fmt.Sprintf("line %d κόσμε\n", i)
				want.WriteString(s)
				if _, err := io.WriteString(w, s); err != nil {
					t.Fatal(err)
				}
			}
			select {
			case err := <-other:
				t.Fatalf("a write went through during the stream: %v", err)
			default:
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-other; err != nil {
				t.Fatal(err)
			}
			typ, got := read(t, client)
			if typ != wsgate.TextMessage || !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("got %v %d bytes, want text %d bytes", typ, len(got), want.Len())
			}
			if typ, got := read(t, client); typ != wsgate.BinaryMessage || string(got) != "after" {
				t.Fatalf("then %v %q", typ, got)
			}
		})
	}
	t.Run("invalid UTF-8", func(t *testing.T) {
		server, client := pair(t, nil, nil)
		w, _ := server.Writer(context.Background(), wsgate.TextMessage)
		w.Write(bytes.Repeat([]byte("a"), 40<<10)) // one fragment goes out
		if _, err := w.Write([]byte{0xff}); !errors.Is(err, wsgate.ErrInvalidUTF8) {
			t.Fatalf("got %v", err)
		}
		w.Close()
		if ce := closeErr(t, client); ce.Code != wsgate.StatusInvalidFramePayloadData {
			t.Fatalf("peer saw %v, want 1007", ce)
		}
	})
}

// The read limit can change after the handshake.
func TestSetReadLimit(t *testing.T) {
	server, client := pair(t, &wsgate.Options{ReadLimit: 1024}, nil)
	server.SetReadLimit(64 << 10)
	write(t, client, wsgate.BinaryMessage, make([]byte, 32<<10))
	if _, p := read(t, server); len(p) != 32<<10 {
		t.Fatalf("got %d bytes", len(p))
	}
	server.SetReadLimit(16)
	write(t, client, wsgate.BinaryMessage, make([]byte, 17))
	if ce := closeErr(t, client); ce.Code != wsgate.StatusMessageTooBig {
		t.Fatalf("got %v, want 1009", ce)
	}
}

// wss:// connections share the hardening: a stalled TLS peer does not
// block Close.
func TestTLSCloseDoesNotBlock(t *testing.T) {
	conns := make(chan *wsgate.Conn, 1)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, &wsgate.Options{PingInterval: -1, CloseTimeout: 100 * time.Millisecond})
		if err == nil {
			conns <- c
		}
	}))
	t.Cleanup(srv.Close)
	tcfg := srv.Client().Transport.(*http.Transport).TLSClientConfig
	nc, err := tls.Dial("tcp", strings.TrimPrefix(srv.URL, "https://"), tcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	server := <-conns
	go func() {
		for {
			if err := server.Write(context.Background(), wsgate.BinaryMessage, make([]byte, 64<<10)); err != nil {
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // the peer reads nothing: the writer is stuck
	returned := make(chan struct{})
	go func() { server.Close(); close(returned) }()
	select {
	case <-returned:
	case <-time.After(time.Second):
		t.Fatal("Close blocked on a TLS peer that does not read")
	}
	server.CloseNow()
	waitDone(t, server)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The engine reports its loops and their counters; SetEventLoops sets how
// many start.
func TestEngineStats(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("event loops are Linux only")
	}
	waitFor(t, "the engine to stop", func() bool { return wsgate.ReadEngineStats().Connections == 0 })
	wsgate.SetEventLoops(3)
	defer wsgate.SetEventLoops(0)
	url := echoServer(t, nil)
	var clients []*wsgate.Conn
	for range 4 {
		clients = append(clients, dial(t, url, nil))
	}
	for _, c := range clients {
		write(t, c, wsgate.TextMessage, []byte("hi"))
		read(t, c)
	}
	st := wsgate.ReadEngineStats()
	if len(st.Loops) != 3 || st.Connections != 8 {
		t.Fatalf("stats %+v, want 3 loops and 8 connections (4 clients, 4 servers)", st)
	}
	conns, wakeups := 0, uint64(0)
	for _, l := range st.Loops {
		conns += l.Connections
		wakeups += l.Wakeups
		if l.Events < l.Wakeups {
			t.Fatalf("loop %+v: fewer events than wake-ups", l)
		}
	}
	if conns != 8 || wakeups == 0 {
		t.Fatalf("loops serve %d connections with %d wake-ups", conns, wakeups)
	}
}

// After traffic that took large buffers stops, the engine gives the memory
// back (two collections and FreeOSMemory) instead of leaving it resident
// until the runtime's next collection.
func TestMemoryReleasedAfterLargeTraffic(t *testing.T) {
	wsgate.SetMemoryRelease(100 * time.Millisecond)
	t.Cleanup(func() { wsgate.SetMemoryRelease(wsgate.DefaultMemoryQuiet) })
	c := dial(t, echoServer(t, nil), nil)
	before := wsgate.ReadEngineStats().MemoryReleases
	msg := make([]byte, 100<<10) // larger than a read: reassembled on both ends
	for range 100 {
		write(t, c, wsgate.BinaryMessage, msg)
		if _, p := read(t, c); len(p) != len(msg) {
			t.Fatalf("echo of %d bytes", len(p))
		}
	}
	waitFor(t, "a memory release", func() bool { return wsgate.ReadEngineStats().MemoryReleases > before })
}
