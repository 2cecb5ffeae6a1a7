package hub

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// smallBufListener returns a loopback listener whose accepted sockets have
// a tiny send buffer, so that a reader that stops is noticed after a few
// KiB instead of megabytes.
func smallBufListener(t *testing.T) net.Listener {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
		})
	}}
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// One subscriber stops reading among thousands: it is disconnected with
// Centrifugo's "slow" code, its queue never grows past its bound, and
// every other subscriber gets every publication, in order.
func TestSlowConsumerAmongThousands(t *testing.T) {
	const readers = 2000
	const pubs = 200
	cfg := openCfg()
	cfg.PingInterval = -1
	e := newEnv(t, envOptions{cfg: cfg, sendMsgs: 128, sendBytes: 256 << 10, listener: smallBufListener(t), writeTimeout: time.Minute})
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/"

	var got, disorder atomic.Int64
	var conns []*wsgate.Conn
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
	}()
	for i := 0; i < readers; i++ {
		next := int64(1)
		conn, err := wsgate.Dial(bg, url, &wsgate.Options{PingInterval: -1, OnMessage: func(_ *wsgate.Conn, _ wsgate.MessageType, data []byte) {
			// {"t":"pub",...,"d":N}
			n := int64(0)
			j := strings.LastIndexByte(string(data), ':')
			for _, b := range data[j+1 : len(data)-2] { // ...,"n":N}}
				n = n*10 + int64(b-'0')
			}
			if n != next {
				disorder.Add(1)
			}
			next = n + 1
			got.Add(1)
		}})
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		c := <-e.clients
		if err := e.h.Connect(bg, c, ConnectRequest{}, func(*ConnectResult) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := e.h.Subscribe(bg, c, SubscribeRequest{Channel: "wide"}, func(*SubscribeResult) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	stalled := e.dial(dialOptions{stalled: true, rcvBuf: 4096})
	if err := e.h.Connect(bg, stalled.c, ConnectRequest{}, func(*ConnectResult) error { return nil }); err != nil {
		t.Fatal(err)
	}
	stalled.subscribe(e.h, SubscribeRequest{Channel: "wide"})
	stalledServer := stalled.c.Conn()

	payload := []byte(`"` + strings.Repeat("x", 1000) + `"`)
	maxQueued := 0
	for i := 1; i <= pubs; i++ {
		data := append(append([]byte(`{"p":`), payload...), []byte(`,"n":`+itoa(i)+`}`)...)
		if _, err := e.h.Publish(bg, "wide", data, PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		if q := stalledServer.Stats().QueuedBytes; q > maxQueued {
			maxQueued = q
		}
		if i%16 == 0 {
			// Keep the healthy readers within their queue bound: they are
			// slow only because this machine runs all of them at once.
			waitFor(t, "readers to keep up", func() bool { return got.Load() >= int64(i-64)*readers })
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for got.Load() != readers*pubs && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got.Load() != readers*pubs {
		t.Fatalf("readers got %d of %d publications; stats %+v", got.Load(), readers*pubs, e.h.Stats())
	}
	st := e.h.Stats()
	if n := disorder.Load(); n != 0 {
		t.Fatalf("%d publications out of order", n)
	}
	if n := st.SlowDisconnects; n != 1 {
		t.Fatalf("%d slow disconnects, want 1", n)
	}
	if maxQueued > 256<<10+2048 {
		t.Fatalf("the stalled connection queued %d bytes, over its 256 KiB bound", maxQueued)
	}
	// When it reads again, the stalled client finds the close code.
	var code wsgate.StatusCode
	for {
		_, _, err := stalled.conn.Read(bg)
		if err != nil {
			var ce *wsgate.CloseError
			if errors.As(err, &ce) {
				code = ce.Code
			}
			break
		}
	}
	if code != 3008 {
		t.Fatalf("stalled client closed with %d, want 3008", code)
	}
	waitFor(t, "the slow client to leave the hub", func() bool { return e.h.Stats().Clients == readers })
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			break
		}
	}
	return string(b[n:])
}

var _ = time.Second
