package wsgate_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

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
