package server

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/hub"
)

// benchScrapeEvery is how often the benchmarks with metrics on scrape
// /metrics: 300 times Prometheus' default of 15 s, so that the scrape's
// cost shows if it has one.
const benchScrapeEvery = 50 * time.Millisecond

// scrapeDuring scrapes url every benchScrapeEvery until the benchmark
// ends, and returns how many scrapes it made.
func scrapeDuring(b *testing.B, url string) *atomic.Int64 {
	var n atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(benchScrapeEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			if res, err := http.Get(url); err == nil {
				res.Body.Close()
				n.Add(1)
			}
		}
	}()
	b.Cleanup(func() { close(stop); <-done })
	return &n
}

// benchServer starts a quiet server for a benchmark, with or without
// metrics, and returns its address.
func benchServer(b *testing.B, metrics bool) (*Server, string) {
	cfg := demoConfig()
	cfg.PingInterval = -1
	cfg.DisableMetrics = !metrics
	cfg.MaxConns = -1
	log, _ := newTestLogger()
	s, err := New(cfg, log)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	b.Cleanup(func() { cancel(); <-done })
	for s.hub.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	return s, ln.Addr().String()
}

// benchDial opens n client connections to url, closed when the benchmark
// ends.
func benchDial(b *testing.B, url string, n int) []*wsgate.Conn {
	conns := make([]*wsgate.Conn, n)
	for i := range conns {
		c, err := wsgate.Dial(context.Background(), url, &wsgate.Options{PingInterval: -1})
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	b.Cleanup(func() {
		for _, c := range conns {
			c.CloseNow()
			<-c.Done()
		}
	})
	return conns
}

// benchEcho measures round trips of 64-byte messages on /ws over 64
// connections at once; an op is one round trip.
func benchEcho(b *testing.B, metrics bool) {
	_, addr := benchServer(b, metrics)
	pool := make(chan *wsgate.Conn, 64)
	for _, c := range benchDial(b, "ws://"+addr+"/ws", cap(pool)) {
		pool <- c
	}
	if metrics {
		scrapeDuring(b, "http://"+addr+"/metrics")
	}
	msg := make([]byte, 64)
	b.SetParallelism(cap(pool) / max(1, runtime.GOMAXPROCS(0)))
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := <-pool
		ctx := context.Background()
		for pb.Next() {
			if err := c.Write(ctx, wsgate.BinaryMessage, msg); err != nil {
				b.Error(err)
				return
			}
			if _, _, err := c.Read(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// benchBroadcast measures publications to one channel with 500
// subscribers; an op is one publication delivered to all of them.
func benchBroadcast(b *testing.B, metrics bool) {
	const subscribers = 500
	s, addr := benchServer(b, metrics)
	var delivered atomic.Int64
	enc := protocol.NewJSONCommandEncoder()
	for _, c := range benchDial(b, "ws://"+addr+hubPath, subscribers) {
		for i, cmd := range []*protocol.Command{
			{Id: 1, Connect: &protocol.ConnectRequest{}},
			{Id: 2, Subscribe: &protocol.SubscribeRequest{Channel: "bench"}},
		} {
			frame, _ := enc.Encode(cmd)
			if err := c.Write(context.Background(), wsgate.TextMessage, frame); err != nil {
				b.Fatal(err)
			}
			if _, reply, err := c.Read(context.Background()); err != nil || !bytes.Contains(reply, []byte(`"id":`+string(rune('1'+i)))) {
				b.Fatalf("reply %d: %s %v", i+1, reply, err)
			}
		}
		go func() {
			for {
				_, frame, err := c.Read(context.Background())
				if err != nil {
					return
				}
				delivered.Add(int64(bytes.Count(frame, []byte(`"pub":`))))
			}
		}()
	}
	if metrics {
		scrapeDuring(b, "http://"+addr+"/metrics")
	}
	h := s.hub.Load().hub
	data := []byte(`{"price":42}`)
	const window = 64 // publications ahead of the slowest delivery
	b.ResetTimer()
	for i := range b.N {
		for delivered.Load() < int64(i-window)*subscribers {
			runtime.Gosched()
		}
		if _, err := h.Publish(context.Background(), "bench", data, hub.PublishOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	for delivered.Load() < int64(b.N)*subscribers {
		runtime.Gosched()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)*subscribers/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkMetricsOverhead runs the echo and the broadcast benchmarks with
// metrics off and on (on: /metrics scraped every 50 ms during the run),
// in one run, so that their ratio shows what the metrics cost:
//
//	go test -run '^$' -bench MetricsOverhead -count 5 ./internal/server
func BenchmarkMetricsOverhead(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "metrics=off"
		if on {
			name = "metrics=on"
		}
		b.Run("echo/"+name, func(b *testing.B) { benchEcho(b, on) })
		b.Run("broadcast/"+name, func(b *testing.B) { benchBroadcast(b, on) })
	}
}
