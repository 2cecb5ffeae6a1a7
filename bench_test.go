package wsgate_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// benchEcho measures round trips of size-byte messages with one client
// connection and an event-driven echo server, both in this process.
func benchEcho(b *testing.B, size int, copts *wsgate.Options) {
	sopts := &wsgate.Options{OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
		c.Write(context.Background(), typ, p)
	}}
	if copts != nil {
		sopts.Compression = copts.Compression
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wsgate.Upgrade(w, r, sopts)
	}))
	defer srv.Close()
	c, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), copts)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { c.CloseNow(); <-c.Done() }()
	msg := make([]byte, size)
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Write(ctx, wsgate.BinaryMessage, msg); err != nil {
			b.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEcho(b *testing.B) {
	for _, size := range []int{64, 1024, 64 << 10} {
		b.Run(sizeName(size), func(b *testing.B) { benchEcho(b, size, nil) })
	}
	b.Run("1KiB/compressed", func(b *testing.B) { benchEcho(b, 1024, &wsgate.Options{Compression: true}) })
}

// BenchmarkWrite measures one-way throughput of the write path: messages
// stream to a server that counts them.
func BenchmarkWrite(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(sizeName(size), func(b *testing.B) {
			got := make(chan struct{}, 1)
			var want, n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				wsgate.Upgrade(w, r, &wsgate.Options{OnMessage: func(c *wsgate.Conn, typ wsgate.MessageType, p []byte) {
					if n.Add(1) == want.Load() {
						got <- struct{}{}
					}
				}})
			}))
			defer srv.Close()
			c, err := wsgate.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), &wsgate.Options{SendQueueMessages: 1 << 20, SendQueueBytes: 1 << 30})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { c.CloseNow(); <-c.Done() }()
			msg := make([]byte, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			want.Store(int64(b.N))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := c.Write(context.Background(), wsgate.BinaryMessage, msg); err != nil {
					b.Fatal(err)
				}
			}
			<-got
		})
	}
}

func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkEnqueueFanOut enqueues each of a stream of prepared messages to
// 1,000 server connections, as a hub's broadcast does, with and without
// permessage-deflate. The clients are raw sockets that count frames
// without decoding them, so the time is mostly the server's. It reports
// the time per delivery and the allocations per publication (b/op and
// allocs/op: 1,000 deliveries).
func BenchmarkEnqueueFanOut(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchFanOut(b, 1000, false) })
	b.Run("compressed", func(b *testing.B) { benchFanOut(b, 1000, true) })
}

func benchFanOut(b *testing.B, subs int, compress bool) {
	serverConns := make(chan *wsgate.Conn, subs)
	sopts := &wsgate.Options{PingInterval: -1, Compression: compress}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := wsgate.Upgrade(w, r, sopts); err == nil {
			serverConns <- c
		}
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"
	ext := ""
	if compress {
		ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
	}
	var got atomic.Int64
	var readers sync.WaitGroup
	defer readers.Wait()
	var servers []*wsgate.Conn
	for range subs {
		peer := rawDialWith(b, url, ext)
		defer peer.nc.Close()
		readers.Add(1)
		go func() {
			defer readers.Done()
			countFrames(peer.br, &got)
		}()
		s := <-serverConns
		defer s.CloseNow()
		if s.Compressed() != compress {
			b.Fatalf("Compressed() = %v", s.Compressed())
		}
		servers = append(servers, s)
	}
	wait := func(n int64) {
		deadline := time.Now().Add(30 * time.Second)
		for got.Load() < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Microsecond)
		}
		if got.Load() < n {
			b.Fatalf("%d of %d deliveries arrived", got.Load(), n)
		}
	}
	payload := []byte(`{"channel":"news","pub":{"data":{"text":"` + strings.Repeat("hello ", 8) + `"},"offset":12345}}`)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	start := time.Now()
	for b.Loop() {
		pm, err := wsgate.NewPreparedMessage(wsgate.TextMessage, payload)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range servers {
			if err := s.Enqueue(ctx, pm); err != nil {
				b.Fatal(err)
			}
		}
		if i++; i%64 == 0 {
			wait(int64(i-32) * int64(subs)) // stay well within the queues
		}
	}
	wait(int64(i) * int64(subs))
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(i*subs), "ns/delivery")
}

// countFrames reads unmasked frames until the connection ends, adding one
// to got for each, without decoding their payloads.
func countFrames(br *bufio.Reader, got *atomic.Int64) {
	var h [8]byte
	for {
		if _, err := io.ReadFull(br, h[:2]); err != nil {
			return
		}
		n := int64(h[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(br, h[:2]); err != nil {
				return
			}
			n = int64(binary.BigEndian.Uint16(h[:2]))
		case 127:
			if _, err := io.ReadFull(br, h[:8]); err != nil {
				return
			}
			n = int64(binary.BigEndian.Uint64(h[:8]))
		}
		if _, err := br.Discard(int(n)); err != nil {
			return
		}
		got.Add(1)
	}
}
