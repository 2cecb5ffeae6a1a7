package centrifugo

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/hub"
)

// TestUpgradeHook checks what a server builds on: Upgrade returns the
// connection, Config.OnClose is told once when the connection has ended,
// and a refused upgrade returns its error and never calls the hook.
func TestUpgradeHook(t *testing.T) {
	h, err := hub.New(bg, testHubConfig())
	if err != nil {
		t.Fatal(err)
	}
	type closed struct {
		conn *wsgate.Conn
		err  error
	}
	ended := make(chan closed, 4)
	handler := NewHandler(Config{Hub: h, OnClose: func(c *wsgate.Conn, err error) {
		ended <- closed{c, err}
	}})
	upgraded := make(chan *wsgate.Conn, 4)
	refused := make(chan error, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := handler.Upgrade(w, r)
		if err != nil {
			refused <- err
			return
		}
		upgraded <- c
	}))
	s := &server{t: t, h: h, srv: srv, ws: "ws" + strings.TrimPrefix(srv.URL, "http")}
	t.Cleanup(func() {
		srv.Close()
		h.Shutdown(bg)
	})

	c := s.dial(protocol.TypeJSON)
	c.connect(userToken(t, "u1", nil))
	sc := <-upgraded
	c.conn.CloseWithStatus(wsgate.StatusNormalClosure, "bye")
	select {
	case e := <-ended:
		if e.conn != sc || wsgate.CloseStatus(e.err) != wsgate.StatusNormalClosure {
			t.Errorf("hook got %p %v, want the upgraded connection %p closed with 1000", e.conn, e.err, sc)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the hook was not called")
	}

	// A plain GET is refused with 426: an error, and no hook.
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET: %d, want 426", resp.StatusCode)
	}
	if err := <-refused; err == nil {
		t.Error("a refused upgrade returned no error")
	}
	select {
	case e := <-ended:
		t.Fatalf("hook called again: %+v", e)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestBudget: the connections count against Config.Budget, so a client
// holding a large half-sent frame is closed when the budget runs out.
func TestBudget(t *testing.T) {
	h, err := hub.New(bg, testHubConfig())
	if err != nil {
		t.Fatal(err)
	}
	budget := wsgate.NewBudget(256 << 10)
	srv := httptest.NewServer(NewHandler(Config{Hub: h, Budget: budget, MessageSizeLimit: 4 << 20, InsecureSkipOriginCheck: true}))
	t.Cleanup(func() {
		srv.Close()
		h.Shutdown(bg)
	})
	nc, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(nc, "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", srv.Listener.Addr())
	br := bufio.NewReader(nc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	// A text frame of 1 MiB, masked with a zero key, of which 512 KiB are sent.
	const size = 1 << 20
	frame := []byte{0x81, 0x80 | 127, 0, 0, 0, 0, 0, size >> 16, 0, 0, 0, 0, 0, 0}
	frame = append(frame, make([]byte, size/2)...)
	if _, err := nc.Write(frame); err != nil {
		t.Fatal(err)
	}
	// The server closes it: 1009 (message too big) for the memory budget.
	head := make([]byte, 4)
	if _, err := br.Read(head); err != nil {
		t.Fatalf("reading the close frame: %v", err)
	}
	if head[0] != 0x88 || int(head[2])<<8|int(head[3]) != int(wsgate.StatusMessageTooBig) {
		t.Fatalf("got frame % x, want a close frame with 1009", head)
	}
	if budget.Evictions() != 1 {
		t.Errorf("%d evictions, want 1", budget.Evictions())
	}
}
