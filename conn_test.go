package wsgate_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

func TestEchoKeepsMessageType(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		c := dial(t, echoServer(t, nil), copts)
		cases := []struct {
			typ wsgate.MessageType
			p   []byte
		}{
			{wsgate.TextMessage, []byte("Hello world!")},
			{wsgate.BinaryMessage, []byte{0, 1, 2, 0xff, 0xfe}},
			{wsgate.TextMessage, []byte("")},
			{wsgate.BinaryMessage, bytes.Repeat([]byte{7}, 70000)},
			{wsgate.TextMessage, []byte(strings.Repeat("κόσμε", 10000))},
		}
		for _, tc := range cases {
			write(t, c, tc.typ, tc.p)
			typ, p := read(t, c)
			if typ != tc.typ || !bytes.Equal(p, tc.p) {
				t.Fatalf("echo of %v (%d bytes) came back as %v (%d bytes)", tc.typ, len(tc.p), typ, len(p))
			}
		}
	})
}

func TestTutorialAPI(t *testing.T) {
	c := dial(t, echoServer(t, nil), nil)
	if err := c.WriteMessage([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	p, err := c.ReadMessage()
	if err != nil || string(p) != "hi" {
		t.Fatalf("ReadMessage = %q, %v", p, err)
	}
	if err := c.WriteMessage([]byte{0xff}); !errors.Is(err, wsgate.ErrInvalidUTF8) {
		t.Fatalf("WriteMessage(invalid UTF-8) = %v, want ErrInvalidUTF8", err)
	}
}

// The tutorial's WriteMessage returns nil for a message that is never sent
// once the connection is closed. wsgate says so.
func TestWriteAfterCloseFails(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		c := dial(t, echoServer(t, nil), copts)
		c.Close()
		err := c.WriteMessage([]byte("lost?"))
		if !errors.Is(err, net.ErrClosed) || !errors.Is(err, wsgate.ErrClosed) {
			t.Fatalf("write after Close = %v, want net.ErrClosed", err)
		}
		waitDone(t, c)
		err = c.Write(context.Background(), wsgate.BinaryMessage, []byte("x"))
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after the end = %v, want net.ErrClosed", err)
		}
		if _, _, err := c.Read(context.Background()); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after the end = %v, want net.ErrClosed", err)
		}
		if got := wsgate.CloseStatus(err); got != wsgate.StatusNormalClosure {
			t.Fatalf("CloseStatus = %v, want 1000", got)
		}
	})
}

func TestCloseFlushesQueuedMessages(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		server, client := pair(t, nil, copts)
		const n = 500
		payload := bytes.Repeat([]byte("x"), 4096)
		for i := 0; i < n; i++ {
			write(t, server, wsgate.BinaryMessage, append([]byte(fmt.Sprint(i, ":")), payload...))
		}
		if err := server.CloseWithStatus(wsgate.StatusGoingAway, "bye"); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			_, p := read(t, client)
			if !bytes.HasPrefix(p, []byte(fmt.Sprint(i, ":"))) {
				t.Fatalf("message %d: got prefix %q", i, p[:8])
			}
		}
		ce := closeErr(t, client)
		if ce.Code != wsgate.StatusGoingAway || ce.Reason != "bye" || !ce.Remote {
			t.Fatalf("client saw %+v, want 1001 \"bye\" from the peer", ce)
		}
		ce = closeErr(t, server)
		if ce.Code != wsgate.StatusGoingAway || ce.Remote {
			t.Fatalf("server saw %+v, want its own 1001", ce)
		}
	})
}

func TestCloseIsIdempotentUnderConcurrency(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		server, client := pair(t, nil, copts)
		var wg sync.WaitGroup
		for i := 0; i < 200; i++ {
			wg.Add(3)
			go func() { defer wg.Done(); client.Close() }()
			go func() { defer wg.Done(); server.Close() }()
			go func() { defer wg.Done(); client.WriteMessage([]byte("racing")) }()
		}
		wg.Wait()
		waitDone(t, client)
		waitDone(t, server)
		if err := client.Close(); err != nil {
			t.Fatalf("Close after the end = %v", err)
		}
	})
}

func TestConcurrentWritersNeverInterleave(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		big := &wsgate.Options{SendQueueMessages: 1 << 16, SendQueueBytes: 64 << 20, RecvQueueMessages: 1 << 16, RecvQueueBytes: 64 << 20}
		server, client := pair(t, big, withOpts(copts, big))
		const writers, each = 100, 100
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					msg := fmt.Sprintf("%d:%d:%s", w, i, strings.Repeat("p", 100+w))
					if err := client.Write(context.Background(), wsgate.TextMessage, []byte(msg)); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
				}
			}()
		}
		next := make([]int, writers)
		for n := 0; n < writers*each; n++ {
			_, p := read(t, server)
			var w, i int
			var rest string
			if _, err := fmt.Sscanf(string(p), "%d:%d:%s", &w, &i, &rest); err != nil || len(rest) != 100+w {
				t.Fatalf("mangled message %q", p)
			}
			if i != next[w] {
				t.Fatalf("writer %d: message %d arrived, want %d", w, i, next[w])
			}
			next[w]++
		}
		wg.Wait()
	})
}

func withOpts(base, extra *wsgate.Options) *wsgate.Options {
	o := *extra
	if base != nil {
		o.NetDialContext = base.NetDialContext
	}
	return &o
}

func TestKeepaliveMeasuresRTT(t *testing.T) {
	server, client := pair(t, &wsgate.Options{PingInterval: 20 * time.Millisecond}, nil)
	deadline := time.Now().Add(waitLimit)
	for server.Stats().RTT == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no RTT measured")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = client
}

// A peer that vanishes without a close frame (a half-open connection) is
// detected by the keepalive within PingInterval + PingTimeout.
func TestDeadPeerIsDetected(t *testing.T) {
	opts := &wsgate.Options{PingInterval: 50 * time.Millisecond, PingTimeout: 100 * time.Millisecond}
	url, conns := testServer(t, opts)
	peer := rawDial(t, url) // completes the handshake, then never answers
	server := <-conns
	start := time.Now()
	ce := closeErr(t, server)
	if !errors.Is(ce, wsgate.ErrPingTimeout) || ce.Code != wsgate.StatusAbnormalClosure {
		t.Fatalf("server ended with %v, want ErrPingTimeout / 1006", ce)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v to notice a dead peer", d)
	}
	_ = peer
}

func TestPeerDisconnectWithoutCloseFrame(t *testing.T) {
	url, conns := testServer(t, nil)
	peer := rawDial(t, url)
	server := <-conns
	peer.nc.Close()
	ce := closeErr(t, server)
	if ce.Code != wsgate.StatusAbnormalClosure {
		t.Fatalf("got %v, want 1006", ce)
	}
}

func TestReadLimit(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		server, client := pair(t, &wsgate.Options{ReadLimit: 1000}, copts)
		write(t, client, wsgate.BinaryMessage, make([]byte, 1000))
		if _, p := read(t, server); len(p) != 1000 {
			t.Fatalf("got %d bytes", len(p))
		}
		write(t, client, wsgate.BinaryMessage, make([]byte, 1001))
		ce := closeErr(t, server)
		if ce.Code != wsgate.StatusMessageTooBig || !errors.Is(ce, wsgate.ErrMessageTooBig) {
			t.Fatalf("server: %v, want 1009 / ErrMessageTooBig", ce)
		}
		if got := closeErr(t, client); got.Code != wsgate.StatusMessageTooBig || !got.Remote {
			t.Fatalf("client: %v, want 1009 from the peer", got)
		}
	})
}

func TestInvalidUTF8Closes1007(t *testing.T) {
	url, conns := testServer(t, nil)
	peer := rawDial(t, url)
	server := <-conns
	// The first fragment is already invalid: the close must come without
	// waiting for the rest of the message.
	peer.send(frame(false, 0x1, []byte{'a', 0xC0, 0xAF}))
	if code := peer.expectClose(); code != wsgate.StatusInvalidFramePayloadData {
		t.Fatalf("close code %v, want 1007", code)
	}
	peer.send(frame(true, 0x8, []byte{0x03, 0xEF}))
	if ce := closeErr(t, server); !errors.Is(ce, wsgate.ErrInvalidUTF8) {
		t.Fatalf("server: %v", ce)
	}
}

func TestProtocolErrorCloses1002(t *testing.T) {
	cases := map[string][]byte{
		"reserved opcode":   frame(true, 0x3, nil),
		"rsv2":              append([]byte{0x80 | 0x20 | 0x1}, frame(true, 0x1, nil)[1:]...),
		"unmasked":          {0x81, 0x02, 'h', 'i'},
		"orphan continue":   frame(true, 0x0, []byte("x")),
		"fragmented ping":   frame(false, 0x9, nil),
		"big ping":          frame(true, 0x9, make([]byte, 126)),
		"bad close code":    frame(true, 0x8, []byte{0x03, 0xEC}),
		"1-byte close body": frame(true, 0x8, []byte{0x03}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			url, conns := testServer(t, nil)
			peer := rawDial(t, url)
			server := <-conns
			peer.send(b)
			if code := peer.expectClose(); code != wsgate.StatusProtocolError {
				t.Fatalf("close code %v, want 1002", code)
			}
			peer.send(frame(true, 0x8, []byte{0x03, 0xEA}))
			if ce := closeErr(t, server); !errors.Is(ce, wsgate.ErrProtocol) {
				t.Fatalf("server: %v", ce)
			}
		})
	}
}

// stalledServerConn returns a server connection whose peer never reads.
func stalledServerConn(t *testing.T, opts *wsgate.Options) *wsgate.Conn {
	t.Helper()
	url, conns := testServer(t, opts)
	rawDial(t, url)
	return <-conns
}

// fill writes until the send queue pushes back; it returns that error.
func fill(t *testing.T, c *wsgate.Conn, ctx context.Context) error {
	t.Helper()
	msg := make([]byte, 64<<10)
	for i := 0; i < 10000; i++ {
		if err := c.Write(ctx, wsgate.BinaryMessage, msg); err != nil {
			return err
		}
	}
	t.Fatal("the send queue never filled")
	return nil
}

func TestSlowConsumerPolicies(t *testing.T) {
	small := func(p wsgate.QueuePolicy) *wsgate.Options {
		return &wsgate.Options{SendQueueMessages: 8, SendQueueBytes: 256 << 10, SendQueuePolicy: p, PingInterval: -1}
	}
	t.Run("close", func(t *testing.T) {
		c := stalledServerConn(t, small(wsgate.PolicyClose))
		err := fill(t, c, context.Background())
		if !errors.Is(err, wsgate.ErrSlowConsumer) || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("got %v, want ErrSlowConsumer", err)
		}
		c.CloseNow()
		if ce := closeErr(t, c); ce.Code != wsgate.StatusPolicyViolation {
			t.Fatalf("got %v, want 1008", ce)
		}
	})
	t.Run("drop-newest", func(t *testing.T) {
		c := stalledServerConn(t, small(wsgate.PolicyDropNewest))
		if err := fill(t, c, context.Background()); !errors.Is(err, wsgate.ErrQueueFull) {
			t.Fatalf("got %v, want ErrQueueFull", err)
		}
		if s := c.Stats(); s.Dropped != 1 || s.QueuedMsgs > 8 {
			t.Fatalf("stats %+v", s)
		}
		c.CloseNow()
	})
	t.Run("drop-oldest", func(t *testing.T) {
		c := stalledServerConn(t, small(wsgate.PolicyDropOldest))
		msg := make([]byte, 64<<10)
		for i := 0; i < 200; i++ {
			if err := c.Write(context.Background(), wsgate.BinaryMessage, msg); err != nil {
				t.Fatal(err)
			}
		}
		if s := c.Stats(); s.Dropped == 0 || s.QueuedMsgs > 9 {
			t.Fatalf("stats %+v", s)
		}
		c.CloseNow()
	})
	t.Run("block", func(t *testing.T) {
		c := stalledServerConn(t, small(wsgate.PolicyBlock))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		err := fill(t, c, ctx)
		if !errors.Is(err, wsgate.ErrQueueFull) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v", err)
		}
		// A blocked writer is released by a close from another goroutine.
		errc := make(chan error, 1)
		go func() { errc <- c.Write(context.Background(), wsgate.BinaryMessage, make([]byte, 64<<10)) }()
		time.Sleep(20 * time.Millisecond)
		c.CloseNow()
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("blocked write returned %v, want net.ErrClosed", err)
			}
		case <-time.After(waitLimit):
			t.Fatal("blocked write not released by CloseNow")
		}
	})
}

func TestStalledPeerHitsWriteTimeout(t *testing.T) {
	c := stalledServerConn(t, &wsgate.Options{WriteTimeout: 100 * time.Millisecond, PingInterval: -1, SendQueueMessages: 1 << 20, SendQueueBytes: 1 << 30})
	expectWriteTimeout(t, c, 200)
}

// expectWriteTimeout writes up to n messages of 64 KiB to c, whose peer
// does not read, until a write fails, and checks that c ends with
// ErrWriteTimeout.
func expectWriteTimeout(t *testing.T, c *wsgate.Conn, n int) {
	t.Helper()
	msg := make([]byte, 64<<10)
	for i := 0; i < n; i++ {
		if err := c.Write(context.Background(), wsgate.BinaryMessage, msg); err != nil {
			break
		}
	}
	if ce := closeErr(t, c); !errors.Is(ce, wsgate.ErrWriteTimeout) {
		t.Fatalf("got %v, want ErrWriteTimeout", ce)
	}
}

// A reader that falls behind pushes back on the peer; nothing is lost.
func TestReceiveQueueBackpressure(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		server, client := pair(t, &wsgate.Options{RecvQueueMessages: 4, RecvQueueBytes: 1 << 10}, copts)
		const n = 2000
		go func() {
			for i := 0; i < n; i++ {
				if err := client.Write(context.Background(), wsgate.TextMessage, []byte(fmt.Sprint(i))); err != nil {
					return
				}
			}
		}()
		for i := 0; i < n; i++ {
			_, p := read(t, server)
			if string(p) != fmt.Sprint(i) {
				t.Fatalf("got %q, want %d", p, i)
			}
			if i%500 == 0 {
				time.Sleep(20 * time.Millisecond) // let the queue fill
			}
		}
	})
}

func TestSubprotocolNegotiation(t *testing.T) {
	server, client := pair(t, &wsgate.Options{Subprotocols: []string{"v2", "v1"}}, &wsgate.Options{Subprotocols: []string{"v1", "v2"}})
	if server.Subprotocol() != "v2" || client.Subprotocol() != "v2" {
		t.Fatalf("server %q client %q, want v2", server.Subprotocol(), client.Subprotocol())
	}
}

func TestCompression(t *testing.T) {
	transports(t, func(t *testing.T, copts *wsgate.Options) {
		o := withOpts(copts, &wsgate.Options{Compression: true})
		c := dial(t, echoServer(t, &wsgate.Options{Compression: true}), o)
		if !c.Compressed() {
			t.Fatal("permessage-deflate not negotiated")
		}
		for _, msg := range []string{"", "a", strings.Repeat("compress me ", 5000)} {
			write(t, c, wsgate.TextMessage, []byte(msg))
			if _, p := read(t, c); string(p) != msg {
				t.Fatalf("echo mismatch for %d bytes", len(msg))
			}
		}
		plain := dial(t, echoServer(t, &wsgate.Options{Compression: true}), copts)
		if plain.Compressed() {
			t.Fatal("compression without an offer")
		}
	})
}

func TestOriginCheck(t *testing.T) {
	url, _ := testServer(t, &wsgate.Options{OriginPatterns: []string{"*.example.com", "https://secure.example.org"}})
	dialOrigin := func(origin string) error {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		c, err := wsgate.Dial(ctx, url, &wsgate.Options{Header: http.Header{"Origin": {origin}}})
		if err == nil {
			c.CloseNow()
			waitDone(t, c)
		}
		return err
	}
	host := strings.TrimPrefix(url, "ws://")
	if err := dialOrigin("http://" + host); err != nil {
		t.Fatalf("same origin refused: %v", err)
	}
	if err := dialOrigin("https://app.example.com"); err != nil {
		t.Fatalf("allowlisted origin refused: %v", err)
	}
	if err := dialOrigin("https://secure.example.org"); err != nil {
		t.Fatalf("allowlisted origin with its scheme refused: %v", err)
	}
	if err := dialOrigin("http://secure.example.org"); err == nil {
		t.Fatal("a pattern with https matched an http origin")
	}
	err := dialOrigin("https://evil.test")
	var he *wsgate.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusForbidden || !errors.Is(err, wsgate.ErrBadHandshake) {
		t.Fatalf("foreign origin: %v, want 403", err)
	}
}

func TestBadHandshakes(t *testing.T) {
	url, _ := testServer(t, nil)
	httpURL := "http" + strings.TrimPrefix(url, "ws")
	cases := []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"plain GET", nil, http.StatusUpgradeRequired},
		{"wrong version", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "8", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, http.StatusUpgradeRequired},
		{"bad key", map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "short"}, http.StatusBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, httpURL, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestDialNonWebSocketServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	_, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	var he *wsgate.HandshakeError
	if !errors.As(err, &he) || he.StatusCode != http.StatusNotFound || !errors.Is(err, wsgate.ErrBadHandshake) {
		t.Fatalf("got %v, want a HandshakeError with 404", err)
	}
}

// Wrap serves connections whose handshake happened elsewhere, over any
// net.Conn: here an in-memory pipe.
func TestWrapOverPipe(t *testing.T) {
	a, b := net.Pipe()
	server := wsgate.Wrap(a, wsgate.RoleServer, &wsgate.Options{OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
		c.Write(context.Background(), typ, p)
	}})
	client := wsgate.Wrap(b, wsgate.RoleClient, nil)
	write(t, client, wsgate.BinaryMessage, []byte("over a pipe"))
	if _, p := read(t, client); string(p) != "over a pipe" {
		t.Fatalf("got %q", p)
	}
	client.Close()
	waitDone(t, client)
	waitDone(t, server)
	if ce := closeErr(t, server); ce.Code != wsgate.StatusNormalClosure || !ce.Remote {
		t.Fatalf("server: %v", ce)
	}
}

// After failing a connection the server does not wait for a reply close
// frame (RFC 6455 section 7.1.7): its close frame is followed by FIN at once.
func TestFailClosesTCPPromptly(t *testing.T) {
	cases := map[string][]byte{
		"reserved close code": frame(true, 0x8, []byte{0x03, 0xEC}),
		"too big":             frame(true, 0x2, make([]byte, 2048)),
		"invalid UTF-8":       frame(true, 0x1, []byte{0xff}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			url, conns := testServer(t, &wsgate.Options{ReadLimit: 1024})
			peer := rawDial(t, url)
			server := <-conns
			peer.send(b)
			peer.expectClose()
			start := time.Now()
			if _, _, err := peer.next(); err == nil {
				t.Fatal("a frame after the close frame")
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("TCP still open %v after the close frame", d)
			}
			peer.nc.Close()
			start = time.Now()
			waitDone(t, server)
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Fatalf("server lingered %v after the peer closed", d)
			}
		})
	}
}

// A panicking handler costs its own connection (1011), not the event loop
// that serves the others.
func TestOnMessagePanicClosesOnlyThatConnection(t *testing.T) {
	url, conns := testServer(t, &wsgate.Options{OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
		if string(p) == "boom" {
			panic("handler bug")
		}
		c.Write(context.Background(), typ, p)
	}})
	bad, good := dial(t, url, nil), dial(t, url, nil)
	s1, s2 := <-conns, <-conns
	t.Cleanup(func() { s1.CloseNow(); s2.CloseNow(); waitDone(t, s1); waitDone(t, s2) })
	write(t, bad, wsgate.TextMessage, []byte("boom"))
	if ce := closeErr(t, bad); ce.Code != wsgate.StatusInternalError {
		t.Fatalf("got %v, want 1011", ce)
	}
	write(t, good, wsgate.TextMessage, []byte("still here"))
	if _, p := read(t, good); string(p) != "still here" {
		t.Fatalf("got %q", p)
	}
}

// wss:// end to end: TLS connections use the net.Conn transport on both
// sides.
func TestTLS(t *testing.T) {
	url, cfg := tlsEchoServer(t, nil, nil)
	c := dial(t, url, &wsgate.Options{TLSConfig: cfg})
	write(t, c, wsgate.BinaryMessage, []byte("over TLS"))
	if _, p := read(t, c); string(p) != "over TLS" {
		t.Fatalf("got %q", p)
	}
	c.Close()
	if ce := closeErr(t, c); ce.Code != wsgate.StatusNormalClosure {
		t.Fatalf("got %v", ce)
	}
}

// tlsEchoServer serves an echo over TLS (a reader goroutine per
// connection, reading crypto/tls's records in small pieces) and returns its
// wss URL and a client TLS configuration that trusts it. Server Conns are
// sent on conns when it is not nil.
func tlsEchoServer(t *testing.T, opts *wsgate.Options, conns chan<- *wsgate.Conn) (string, *tls.Config) {
	t.Helper()
	o := wsgate.Options{}
	if opts != nil {
		o = *opts
	}
	if o.OnMessage == nil {
		o.OnMessage = func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
			c.Write(context.Background(), typ, p)
		}
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, &o)
		if err == nil && conns != nil {
			conns <- c
		}
	}))
	t.Cleanup(srv.Close)
	return "wss" + strings.TrimPrefix(srv.URL, "https"), srv.Client().Transport.(*http.Transport).TLSClientConfig
}

// Messages of every size cross TLS intact, with and without compression:
// the server reads each record in pieces smaller than most messages.
func TestTLSMessageSizes(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			url, cfg := tlsEchoServer(t, &wsgate.Options{Compression: compress, ReadLimit: 1 << 20}, nil)
			c := dial(t, url, &wsgate.Options{TLSConfig: cfg, Compression: compress, ReadLimit: 1 << 20})
			for _, n := range []int{0, 1, 125, 126, 1000, 1017, 1024, 1025, 4096, 16<<10 + 5, 65535, 65536, 300 << 10} {
				msg := make([]byte, n)
				for i := range msg {
					msg[i] = byte(i*7 + n)
				}
				write(t, c, wsgate.BinaryMessage, msg)
				if _, p := read(t, c); !bytes.Equal(p, msg) {
					t.Fatalf("%d bytes: got %d bytes back, not the same", n, len(p))
				}
			}
		})
	}
}

// A TLS peer that stops reading is closed after WriteTimeout, as on the
// event loop.
func TestTLSStalledPeerHitsWriteTimeout(t *testing.T) {
	conns := make(chan *wsgate.Conn, 1)
	url, cfg := tlsEchoServer(t, &wsgate.Options{WriteTimeout: 100 * time.Millisecond, PingInterval: -1, SendQueueMessages: 1 << 20, SendQueueBytes: 1 << 30}, conns)
	host := strings.TrimPrefix(url, "wss://")
	// The client reads nothing: with a small receive buffer the server's
	// writes stall after a few MiB, not after the tens of MiB loopback
	// would take (which, encrypted under -race on a loaded machine, can
	// take longer than the bound below).
	nc, err := tls.DialWithDialer(&net.Dialer{Control: smallReceiveBuffer}, "tcp", host, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host)
	var c *wsgate.Conn
	select {
	case c = <-conns:
	case <-time.After(waitLimit):
		t.Fatal("no server connection")
	}
	start := time.Now()
	expectWriteTimeout(t, c, 1000) // 64 MiB: more than the socket buffers take
	// WriteTimeout is 100 ms: the connection must be gone soon after the
	// socket buffers filled, not after crypto/tls's 5 s wait for a
	// close_notify alert the peer does not read.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
}

// A client may send frames right behind its handshake request, before it
// has seen the response; bytes the HTTP server read ahead must not be lost.
func TestFramesPipelinedWithHandshake(t *testing.T) {
	url := echoServer(t, nil)
	host := strings.TrimPrefix(url, "ws://")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	msg := append([]byte(req), frame(true, 0x1, []byte("first"))...)
	msg = append(msg, frame(true, 0x2, []byte("second"))...)
	if _, err := nc.Write(msg); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	peer := &rawPeer{t: t, nc: nc, br: br}
	for _, want := range []string{"first", "second"} {
		if _, p, err := peer.next(); err != nil || string(p) != want {
			t.Fatalf("got %q, %v; want %q", p, err, want)
		}
	}
}
