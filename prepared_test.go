package wsgate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

func TestWritePrepared(t *testing.T) {
	for _, compress := range []bool{false, true} {
		name := "plain"
		if compress {
			name = "compressed"
		}
		t.Run(name, func(t *testing.T) {
			opts := &wsgate.Options{Compression: compress}
			payload := bytes.Repeat([]byte("prepared message "), 100)
			pm, err := wsgate.NewPreparedMessage(wsgate.TextMessage, payload)
			if err != nil {
				t.Fatal(err)
			}
			payload[0] = 'X' // the message holds its own copy
			var clients []*wsgate.Conn
			for range 3 {
				server, client := pair(t, opts, opts)
				if server.Compressed() != compress {
					t.Fatalf("Compressed() = %v", server.Compressed())
				}
				// Server side: the prepared frame; client side: encoded and masked per connection.
				if err := server.WritePrepared(context.Background(), pm); err != nil {
					t.Fatal(err)
				}
				if err := client.WritePrepared(context.Background(), pm); err != nil {
					t.Fatal(err)
				}
				typ, got := read(t, server)
				if typ != wsgate.TextMessage || !bytes.Equal(got, bytes.Repeat([]byte("prepared message "), 100)) {
					t.Fatalf("server read %v %q", typ, got[:20])
				}
				clients = append(clients, client)
			}
			for _, c := range clients {
				typ, got := read(t, c)
				if typ != wsgate.TextMessage || !bytes.Equal(got, bytes.Repeat([]byte("prepared message "), 100)) {
					t.Fatalf("client read %v %q", typ, got[:20])
				}
			}
		})
	}
}

func TestNewPreparedMessageRejectsInvalidText(t *testing.T) {
	if _, err := wsgate.NewPreparedMessage(wsgate.TextMessage, []byte{0xff}); !errors.Is(err, wsgate.ErrInvalidUTF8) {
		t.Fatalf("err = %v, want ErrInvalidUTF8", err)
	}
	pm, err := wsgate.NewPreparedMessage(wsgate.BinaryMessage, []byte{0xff})
	if err != nil || pm.Type() != wsgate.BinaryMessage || pm.Len() != 1 {
		t.Fatalf("binary: %v %v", pm, err)
	}
}

func TestWritePreparedAfterCloseFails(t *testing.T) {
	server, _ := pair(t, nil, nil)
	pm, _ := wsgate.NewPreparedMessage(wsgate.BinaryMessage, []byte("x"))
	server.Close()
	if err := server.WritePrepared(context.Background(), pm); !errors.Is(err, wsgate.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

// Enqueue writes soon after, without the caller writing; messages queued
// while the peer is behind share frames when the connection joins them.
func TestEnqueueJoinsWhenBehind(t *testing.T) {
	for _, tc := range []struct {
		name string
		sep  []byte
	}{{"no joining", nil}, {"newline", []byte("\n")}, {"no separator", []byte{}}} {
		sep := tc.sep
		t.Run(tc.name, func(t *testing.T) {
			url, conns := testServer(t, &wsgate.Options{JoinSeparator: sep, PingInterval: -1, SendQueueMessages: 4096})
			peer := rawDial(t, url)
			server := <-conns
			t.Cleanup(func() { server.CloseNow() })
			var want []string
			for i := range 2000 {
				msg := fmt.Sprintf(`{"n":%d}`, i)
				want = append(want, msg)
				pm, _ := wsgate.NewPreparedMessage(wsgate.TextMessage, []byte(msg))
				if err := server.Enqueue(context.Background(), pm); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			frames := 0
			for len(got) < len(want) {
				op, p, err := peer.next()
				if err != nil {
					t.Fatalf("after %d messages: %v", len(got), err)
				}
				if op != 0x1 {
					t.Fatalf("opcode %d", op)
				}
				frames++
				switch {
				case sep == nil:
					got = append(got, string(p))
				case len(sep) == 0:
					// Without a separator the protocol frames its messages;
					// here each ends with '}'.
					for _, m := range strings.SplitAfter(string(p), "}") {
						if m != "" {
							got = append(got, m)
						}
					}
				default:
					got = append(got, strings.Split(string(p), string(sep))...)
				}
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("messages differ: got %d, first %q", len(got), got[:3])
			}
			if sep == nil && frames != len(want) {
				t.Fatalf("%d frames for %d messages without joining", frames, len(want))
			}
			if sep != nil && frames >= len(want) {
				t.Fatalf("%d frames for %d messages: nothing was joined", frames, len(want))
			}
			t.Logf("%d messages in %d frames", len(want), frames)
		})
	}
}

// Joined frames respect the bounds and keep working across header sizes
// (payloads crossing 125 and 65535 bytes) on a compression-free server.
func TestJoinAcrossHeaderSizes(t *testing.T) {
	server, client := pair(t, &wsgate.Options{JoinSeparator: []byte("|"), PingInterval: -1}, &wsgate.Options{ReadLimit: 1 << 20})
	var all []string
	for i := range 500 {
		msg := strings.Repeat(string(rune('a'+i%26)), 1+i%300)
		all = append(all, msg)
		pm, _ := wsgate.NewPreparedMessage(wsgate.TextMessage, []byte(msg))
		if err := server.Enqueue(context.Background(), pm); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for len(got) < len(all) {
		_, p := read(t, client)
		if len(p) > 32<<10 {
			t.Fatalf("a joined frame of %d bytes, over 32 KiB", len(p))
		}
		got = append(got, strings.Split(string(p), "|")...)
	}
	if strings.Join(got, "|") != strings.Join(all, "|") {
		t.Fatal("messages differ")
	}
}

// PolicyClose closes with the configured code and reason.
func TestSlowConsumerStatus(t *testing.T) {
	c := stalledServerConn(t, &wsgate.Options{SendQueueMessages: 4, SendQueueBytes: 64 << 10, PingInterval: -1,
		SlowConsumerStatus: 3008, SlowConsumerReason: "slow"})
	err := fill(t, c, context.Background())
	if !errors.Is(err, wsgate.ErrSlowConsumer) {
		t.Fatalf("got %v", err)
	}
	c.CloseNow()
	if ce := closeErr(t, c); ce.Code != 3008 || ce.Reason != "slow" {
		t.Fatalf("got %v, want 3008 slow", ce)
	}
	if _, err := wsgate.Dial(context.Background(), "ws://127.0.0.1:1/", &wsgate.Options{SlowConsumerStatus: 1005}); err == nil || !strings.Contains(err.Error(), "SlowConsumerStatus") {
		t.Fatalf("an unsendable code was accepted: %v", err)
	}
}

// enqueuePeer is the reading end of the Enqueue tests: a raw client that
// sees frames as the server wrote them, or a wsgate client that offered
// permessage-deflate, so the server enqueues compressed frames.
type enqueuePeer struct {
	server *wsgate.Conn
	next   func() (op byte, p []byte, err error)
	closed func() int // the close code the server sent
}

func enqueuePair(t *testing.T, compress bool, opts wsgate.Options) enqueuePeer {
	t.Helper()
	opts.Compression = compress
	url, conns := testServer(t, &opts)
	var e enqueuePeer
	if compress {
		client := dial(t, url, &wsgate.Options{Compression: true, ReadLimit: 64 << 20})
		e.next = func() (byte, []byte, error) {
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			typ, p, err := client.Read(ctx)
			return byte(typ), p, err
		}
		e.closed = func() int {
			_, _, err := client.Read(context.Background())
			var ce *wsgate.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("read after the last message: %v, want a close", err)
			}
			return int(ce.Code)
		}
	} else {
		peer := rawDial(t, url)
		e.next = peer.next
		e.closed = func() int { return int(peer.expectClose()) }
	}
	e.server = <-conns
	if e.server.Compressed() != compress {
		t.Fatalf("Compressed() = %v, want %v", e.server.Compressed(), compress)
	}
	t.Cleanup(func() { e.server.CloseNow() })
	return e
}

// Enqueue on an idle connection keeps the shared frame by reference (the
// plain one, or the compressed one); what is queued next (a Write, another
// Enqueue, a close) must still go out after it, whole and in order,
// whatever the sizes.
func TestEnqueueInterleavedWithWrites(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "compressed"}[compress], func(t *testing.T) {
			e := enqueuePair(t, compress, wsgate.Options{PingInterval: -1, SendQueueMessages: 1 << 20, SendQueueBytes: 1 << 30})
			const n = 3000
			payload := func(i int) []byte {
				size := 10 + i%7
				if i%50 == 0 {
					size = 70<<10 + i // a frame the socket may take only in part
				}
				p := bytes.Repeat([]byte{byte('a' + i%26)}, size)
				copy(p, fmt.Sprint(i))
				return p
			}
			errc := make(chan error, 1)
			go func() {
				for i := range n {
					p := payload(i)
					var err error
					if i%3 == 1 {
						err = e.server.Write(context.Background(), wsgate.BinaryMessage, p)
					} else {
						pm, _ := wsgate.NewPreparedMessage(wsgate.BinaryMessage, p)
						err = e.server.Enqueue(context.Background(), pm)
					}
					if err != nil {
						errc <- fmt.Errorf("message %d: %w", i, err)
						return
					}
				}
				errc <- e.server.Close()
			}()
			for i := range n {
				op, p, err := e.next()
				if err != nil {
					t.Fatalf("message %d: %v", i, err)
				}
				if want := payload(i); op != 0x2 || !bytes.Equal(p, want) {
					t.Fatalf("message %d: opcode %d, %d bytes, want %d bytes", i, op, len(p), len(want))
				}
			}
			if code := e.closed(); code != int(wsgate.StatusNormalClosure) {
				t.Fatalf("close code %d", code)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A large message enqueued on an idle connection whose peer does not read
// yet goes out in part; the rest, and what is queued behind it, follow
// once the peer reads.
func TestEnqueueLargeToStalledPeer(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "compressed"}[compress], func(t *testing.T) {
			e := enqueuePair(t, compress, wsgate.Options{PingInterval: -1, SendQueueMessages: 16, SendQueueBytes: 32 << 20})
			// 8 MiB; random bytes, so that compressed it is still larger
			// than what the socket takes at once.
			big := make([]byte, 8<<20)
			rand.NewChaCha8([32]byte{1}).Read(big)
			pm, _ := wsgate.NewPreparedMessage(wsgate.BinaryMessage, big)
			if err := e.server.Enqueue(context.Background(), pm); err != nil {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond) // the loop writes what the socket takes
			t.Logf("queued after the first write: %+v", e.server.Stats())
			for i := range 3 {
				small, _ := wsgate.NewPreparedMessage(wsgate.TextMessage, []byte(fmt.Sprint("small ", i)))
				if err := e.server.Enqueue(context.Background(), small); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.server.Write(context.Background(), wsgate.TextMessage, []byte("written")); err != nil {
				t.Fatal(err)
			}
			if _, p, err := e.next(); err != nil || !bytes.Equal(p, big) {
				t.Fatalf("big message: %d bytes, %v", len(p), err)
			}
			for _, want := range []string{"small 0", "small 1", "small 2", "written"} {
				if _, p, err := e.next(); err != nil || string(p) != want {
					t.Fatalf("got %q, %v; want %q", p, err, want)
				}
			}
		})
	}
}
