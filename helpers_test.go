package wsgate_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

const waitLimit = 5 * time.Second

// testServer runs Upgrade on an httptest server and hands each server-side
// connection to the returned channel.
func testServer(t *testing.T, opts *wsgate.Options) (url string, conns <-chan *wsgate.Conn) {
	t.Helper()
	ch := make(chan *wsgate.Conn, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := wsgate.Upgrade(w, r, opts)
		if err != nil {
			return
		}
		ch <- c
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), ch
}

// echoServer runs an event-driven echo server.
func echoServer(t *testing.T, opts *wsgate.Options) string {
	t.Helper()
	o := wsgate.Options{}
	if opts != nil {
		o = *opts
	}
	o.OnMessage = func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
		c.Write(context.Background(), typ, p)
	}
	var (
		mu   sync.Mutex
		all  []*wsgate.Conn
		stop = make(chan struct{})
	)
	url, conns := testServer(t, &o)
	go func() {
		for {
			select {
			case c := <-conns:
				mu.Lock()
				all = append(all, c)
				mu.Unlock()
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		mu.Lock()
		defer mu.Unlock()
		for len(conns) > 0 {
			all = append(all, <-conns)
		}
		for _, c := range all {
			c.CloseNow()
			waitDone(t, c)
		}
	})
	return url
}

// pair returns a connected server and client.
func pair(t *testing.T, sopts, copts *wsgate.Options) (server, client *wsgate.Conn) {
	t.Helper()
	url, conns := testServer(t, sopts)
	client = dial(t, url, copts)
	select {
	case server = <-conns:
	case <-time.After(waitLimit):
		t.Fatal("no server connection")
	}
	t.Cleanup(func() {
		server.CloseNow()
		waitDone(t, server)
	})
	return server, client
}

func dial(t *testing.T, url string, opts *wsgate.Options) *wsgate.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	c, err := wsgate.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() {
		c.CloseNow()
		waitDone(t, c)
	})
	return c
}

func waitDone(t testing.TB, c *wsgate.Conn) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitLimit):
		t.Errorf("connection did not end within %v", waitLimit)
	}
}

func read(t *testing.T, c *wsgate.Conn) (wsgate.MessageType, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	typ, p, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, p
}

func write(t *testing.T, c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
	t.Helper()
	if err := c.Write(context.Background(), typ, p); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// closeErr waits for the end and returns the *CloseError.
func closeErr(t *testing.T, c *wsgate.Conn) *wsgate.CloseError {
	t.Helper()
	waitDone(t, c)
	var ce *wsgate.CloseError
	if !errors.As(c.Err(), &ce) {
		t.Fatalf("Err() = %v, want a *CloseError", c.Err())
	}
	return ce
}

// hiddenConn hides the concrete *net.TCPConn type, which makes a Conn use
// the portable reader-goroutine transport instead of the event loop.
type hiddenConn struct{ net.Conn }

func netConnDialer(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return hiddenConn{nc}, nil
}

// transports runs f with a client on each transport.
func transports(t *testing.T, f func(t *testing.T, copts *wsgate.Options)) {
	t.Run("epoll", func(t *testing.T) { f(t, &wsgate.Options{}) })
	t.Run("netconn", func(t *testing.T) { f(t, &wsgate.Options{NetDialContext: netConnDialer}) })
}

// rawPeer is a hand-driven client: it does the handshake and then writes
// and reads raw frames, so tests can misbehave in ways a Conn never would.
type rawPeer struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func rawDial(t testing.TB, url string) *rawPeer {
	t.Helper()
	return rawDialWith(t, url, "")
}

// rawDialWith is rawDial with extra request header lines, each ending in
// CRLF.
func rawDialWith(t testing.TB, url, headers string) *rawPeer {
	t.Helper()
	addr := strings.TrimPrefix(url, "ws://")
	host, path, _ := strings.Cut(addr, "/")
	nc, err := net.DialTimeout("tcp", host, waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	var k [16]byte
	rand.Read(k[:])
	fmt.Fprintf(nc, "GET /%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
		path, host, base64.StdEncoding.EncodeToString(k[:]), headers)
	br := bufio.NewReader(nc)
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	nc.SetReadDeadline(time.Time{})
	return &rawPeer{t: t, nc: nc, br: br}
}

// frame encodes a masked client frame.
func frame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n <= 125:
		out = append(out, 0x80|byte(n))
	case n <= 0xFFFF:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	key := [4]byte{0x12, 0x34, 0x56, 0x78}
	out = append(out, key[:]...)
	for i, b := range payload {
		out = append(out, b^key[i%4])
	}
	return out
}

func (p *rawPeer) send(b []byte) {
	p.t.Helper()
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatalf("raw write: %v", err)
	}
}

// next reads one server frame.
func (p *rawPeer) next() (op byte, payload []byte, err error) {
	p.nc.SetReadDeadline(time.Now().Add(waitLimit))
	var h [2]byte
	if _, err = io.ReadFull(p.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(p.br, b[:])
		n = int(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		io.ReadFull(p.br, b[:])
		n = int(binary.BigEndian.Uint64(b[:]))
	}
	payload = make([]byte, n)
	_, err = io.ReadFull(p.br, payload)
	return h[0] & 0x0F, payload, err
}

// expectClose reads frames until a close frame and returns its code.
func (p *rawPeer) expectClose() wsgate.StatusCode {
	p.t.Helper()
	for {
		op, payload, err := p.next()
		if err != nil {
			p.t.Fatalf("waiting for a close frame: %v", err)
		}
		if op == 0x8 {
			if len(payload) < 2 {
				return wsgate.StatusNoStatusRcvd
			}
			return wsgate.StatusCode(binary.BigEndian.Uint16(payload))
		}
	}
}
