package wsgate_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// fastServer serves a wsgate.Server on 127.0.0.1 with an echo endpoint at
// /ws, whose UpgradeFunc is decide, and "page" at /. It returns the
// address and the server's value log.
type fastEnv struct {
	addr   string
	srv    *wsgate.Server
	opened chan any // each connection's Value, from OnOpen
	done   chan error
}

func startFast(t *testing.T, decide func(r *http.Request, up *wsgate.Upgrader) (*wsgate.Upgrader, any, error), configure func(*wsgate.Server)) *fastEnv {
	t.Helper()
	env := &fastEnv{opened: make(chan any, 64), done: make(chan error, 1)}
	up, err := wsgate.NewUpgrader(&wsgate.Options{
		OnOpen: func(c *wsgate.Conn) { env.opened <- c.Value() },
		OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
			c.Write(context.Background(), typ, p)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "page %s %s %d", r.Method, r.URL.Path, len(body))
	})
	if decide == nil {
		decide = func(r *http.Request, up *wsgate.Upgrader) (*wsgate.Upgrader, any, error) {
			return up, "v:" + r.URL.Query().Get("id"), nil
		}
	}
	env.srv = &wsgate.Server{
		HTTP: &http.Server{Handler: mux},
		Upgrades: map[string]wsgate.UpgradeFunc{
			"/ws": func(r *http.Request) (*wsgate.Upgrader, any, error) { return decide(r, up) },
		},
	}
	if configure != nil {
		configure(env.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env.addr = ln.Addr().String()
	go func() { env.done <- env.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		env.srv.Shutdown(ctx)
		select {
		case err := <-env.done:
			if !errors.Is(err, wsgate.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(waitLimit):
			t.Error("Serve did not return after Shutdown")
		}
	})
	return env
}

func TestServerUpgradesOnTheLoop(t *testing.T) {
	env := startFast(t, nil, nil)
	c := dial(t, "ws://"+env.addr+"/ws?id=7", nil)
	if v := <-env.opened; v != "v:7" {
		t.Fatalf("OnOpen saw Value %v, want v:7", v)
	}
	write(t, c, wsgate.TextMessage, []byte("hello"))
	if _, p := read(t, c); string(p) != "hello" {
		t.Fatalf("echo %q", p)
	}
	// Another path and plain requests to the endpoint go to net/http.
	for _, path := range []string{"/", "/other", "/ws"} {
		resp, err := http.Post("http://"+env.addr+path, "text/plain", strings.NewReader("body!"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := "page POST " + path + " 5"; string(b) != want {
			t.Fatalf("%s: %q, want %q", path, b, want)
		}
	}
}

// After a first request on a keep-alive connection, an upgrade on the same
// connection reaches net/http, which upgrades it the same way.
func TestServerUpgradeAfterKeepAlive(t *testing.T) {
	env := startFast(t, nil, nil)
	nc, err := net.Dial("tcp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	br := bufio.NewReader(nc)
	fmt.Fprintf(nc, "GET /page HTTP/1.1\r\nHost: %s\r\n\r\n", env.addr)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	fmt.Fprintf(nc, "GET /ws?id=9 HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", env.addr)
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade on a keep-alive connection: %v %v", resp, err)
	}
	if v := <-env.opened; v != "v:9" {
		t.Fatalf("OnOpen saw %v", v)
	}
	peer := &rawPeer{t: t, nc: nc, br: br}
	peer.send(frame(true, 0x1, []byte("again")))
	if _, p, err := peer.next(); err != nil || string(p) != "again" {
		t.Fatalf("echo %q %v", p, err)
	}
}

func TestServerRefusals(t *testing.T) {
	refused := make(chan error, 8)
	env := startFast(t, func(r *http.Request, up *wsgate.Upgrader) (*wsgate.Upgrader, any, error) {
		if r.URL.Query().Get("full") != "" {
			return nil, nil, &wsgate.HTTPError{Status: 503, Message: "full", Header: http.Header{"Retry-After": {"1"}}}
		}
		return up, "slot", nil
	}, func(s *wsgate.Server) {
		s.MaxHeaderBytes = 2048
		s.OnRefused = func(r *http.Request, value any, err error) {
			if value != "slot" {
				err = fmt.Errorf("OnRefused got value %v", value)
			}
			refused <- err
		}
	})
	raw := func(req string) *http.Response {
		t.Helper()
		nc, err := net.Dial("tcp", env.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		io.WriteString(nc, req)
		nc.SetReadDeadline(time.Now().Add(waitLimit))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	upgrade := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
	key := "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	cases := []struct {
		name, req string
		status    int
	}{
		{"refused by the application", "GET /ws?full=1 HTTP/1.1\r\nHost: a\r\n" + upgrade + key + "\r\n", 503},
		{"bad key", "GET /ws HTTP/1.1\r\nHost: a\r\n" + upgrade + "Sec-WebSocket-Key: short\r\n\r\n", 400},
		{"foreign origin", "GET /ws HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\n" + upgrade + key + "\r\n", 403},
		{"head too large", "GET /ws HTTP/1.1\r\nHost: a\r\nX-Big: " + strings.Repeat("x", 4096) + "\r\n" + upgrade + key + "\r\n", 431},
		{"malformed", "GET /ws HTTP/1.1\r\nHost a\r\n" + upgrade + key + "\r\n", 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := raw(tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 503 && resp.Header.Get("Retry-After") != "1" {
				t.Fatal("the refusal's header is missing")
			}
		})
	}
	// The two the UpgradeFunc accepted were given back through OnRefused.
	// OnRefused may run after the refusal is written, so the two calls can
	// arrive in either order.
	var got []error
	for range 2 {
		select {
		case err := <-refused:
			got = append(got, err)
		case <-time.After(waitLimit):
			t.Fatal("OnRefused not called")
		}
	}
	for _, want := range []error{wsgate.ErrBadHandshake, wsgate.ErrOriginNotAllowed} {
		if !slices.ContainsFunc(got, func(err error) bool { return errors.Is(err, want) }) {
			t.Errorf("OnRefused: got %v, want one that is %v", got, want)
		}
	}
	select {
	case err := <-refused:
		t.Fatalf("OnRefused called once more: %v", err)
	default:
	}
}

// A client whose head never ends is dropped after HandshakeTimeout; beyond
// MaxHandshakes new connections get 503.
func TestServerHandshakeLimits(t *testing.T) {
	env := startFast(t, nil, func(s *wsgate.Server) {
		s.HandshakeTimeout = 1500 * time.Millisecond
		s.MaxHandshakes = 2
	})
	var slow []net.Conn
	for range 2 {
		nc, err := net.Dial("tcp", env.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		io.WriteString(nc, "GET /ws HTTP/1.1\r\nHost: a\r\n")
		slow = append(slow, nc)
	}
	time.Sleep(50 * time.Millisecond) // both are being read
	nc, err := net.Dial("tcp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != 503 {
		t.Fatalf("over MaxHandshakes: %v %v, want 503", resp, err)
	}
	for _, s := range slow {
		// The timeout is checked about every second.
		s.SetReadDeadline(time.Now().Add(4 * time.Second))
		if _, err := s.Read(make([]byte, 1)); err != io.EOF && !errors.Is(err, net.ErrClosed) && !isReset(err) {
			t.Fatalf("a slow head: %v, want the connection closed", err)
		}
	}
	// With the slow ones gone, connections work again.
	c := dial(t, "ws://"+env.addr+"/ws", nil)
	write(t, c, wsgate.TextMessage, []byte("ok"))
	read(t, c)
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

// Frames sent right behind the request are not lost.
func TestServerFramesBehindTheHead(t *testing.T) {
	env := startFast(t, nil, nil)
	nc, err := net.Dial("tcp", env.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	msg := append([]byte(req), frame(true, 0x1, []byte("first"))...)
	msg = append(msg, frame(true, 0x2, []byte("second"))...)
	nc.Write(msg)
	br := bufio.NewReader(nc)
	nc.SetReadDeadline(time.Now().Add(waitLimit))
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	peer := &rawPeer{t: t, nc: nc, br: br}
	for _, want := range []string{"first", "second"} {
		if _, p, err := peer.next(); err != nil || string(p) != want {
			t.Fatalf("got %q %v, want %q", p, err, want)
		}
	}
}

// On a TLS listener net/http serves everything, upgrades included, with
// the same UpgradeFunc.
func TestServerTLSFallsBack(t *testing.T) {
	env := &fastEnv{opened: make(chan any, 4)}
	up, _ := wsgate.NewUpgrader(&wsgate.Options{
		OnOpen:    func(c *wsgate.Conn) { env.opened <- c.Value() },
		OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) { c.Write(context.Background(), typ, p) },
	})
	srv := &wsgate.Server{
		HTTP: &http.Server{Handler: http.NotFoundHandler()},
		Upgrades: map[string]wsgate.UpgradeFunc{"/ws": func(*http.Request) (*wsgate.Upgrader, any, error) {
			return up, "tls", nil
		}},
	}
	ts := httptest.NewUnstartedServer(nil)
	ts.StartTLS()
	ts.Close() // only for its certificate
	cert := ts.TLS.Certificates
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: cert})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		<-done
	}()
	c := dial(t, "wss://"+ln.Addr().String()+"/ws", &wsgate.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if v := <-env.opened; v != "tls" {
		t.Fatalf("Value %v", v)
	}
	write(t, c, wsgate.TextMessage, []byte("secure"))
	if _, p := read(t, c); string(p) != "secure" {
		t.Fatalf("echo %q", p)
	}
}

// Many connections at once, half upgrades and half page requests, on every
// loop.
func TestServerMixedLoad(t *testing.T) {
	env := startFast(t, nil, nil)
	var upgraded, pages atomic.Int32
	errc := make(chan error, 64)
	for i := range 64 {
		go func() {
			if i%2 == 0 {
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
				defer cancel()
				c, err := wsgate.Dial(ctx, "ws://"+env.addr+"/ws", nil)
				if err != nil {
					errc <- err
					return
				}
				defer func() { c.CloseNow(); <-c.Done() }()
				if err := c.Write(ctx, wsgate.TextMessage, []byte("x")); err != nil {
					errc <- err
					return
				}
				if _, _, err := c.Read(ctx); err != nil {
					errc <- err
					return
				}
				upgraded.Add(1)
			} else {
				resp, err := http.Get("http://" + env.addr + "/p")
				if err != nil {
					errc <- err
					return
				}
				io.ReadAll(resp.Body)
				resp.Body.Close()
				pages.Add(1)
			}
			errc <- nil
		}()
	}
	for range 64 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	for range 32 {
		<-env.opened
	}
	if upgraded.Load() != 32 || pages.Load() != 32 {
		t.Fatalf("%d upgrades, %d pages", upgraded.Load(), pages.Load())
	}
	http.DefaultClient.CloseIdleConnections()
}
