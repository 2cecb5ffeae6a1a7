package hub

import (
	"bytes"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wsgate/wsgate"
)

// BenchmarkHubBroadcast_1000Subs publishes to a channel with 1000
// subscribers on real loopback connections and reports the allocations per
// delivery: the publication is encoded once and the same frame written to
// every connection, so the per-publication allocations (the broker's
// Publication, the encoded frame) are shared by 1000 deliveries.
//
// Allocations per delivery are the process's (the subscribers' clients
// included) divided by the deliveries; allocs/publication is the same count
// per publication. Run with 100 subscribers beside it: when that count does
// not grow with the subscribers, a delivery itself allocates nothing.
func BenchmarkHubBroadcast_1000Subs(b *testing.B) {
	benchmarkBroadcast(b, 1000)
}

// BenchmarkHubBroadcast_100Subs is BenchmarkHubBroadcast_1000Subs with a
// tenth of the subscribers, to compare allocs/publication with.
func BenchmarkHubBroadcast_100Subs(b *testing.B) {
	benchmarkBroadcast(b, 100)
}

func benchmarkBroadcast(b *testing.B, subs int) {
	cfg := openCfg()
	cfg.PingInterval = -1
	t := &testing.T{}
	e := newEnv(t, envOptions{cfg: cfg})
	b.Cleanup(func() {})
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/"
	var got atomic.Int64
	var conns []*wsgate.Conn
	for i := 0; i < subs; i++ {
		conn, err := wsgate.Dial(bg, url, &wsgate.Options{PingInterval: -1, OnMessage: func(_ *wsgate.Conn, _ wsgate.MessageType, p []byte) {
			got.Add(1 + int64(bytes.Count(p, []byte{'\n'}))) // pushes queued behind each other share a frame
		}})
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, conn)
		c := <-e.clients
		if err := e.h.Connect(bg, c, ConnectRequest{}, func(*ConnectResult) error { return nil }); err != nil {
			b.Fatal(err)
		}
		if err := e.h.Subscribe(bg, c, SubscribeRequest{Channel: "bench"}, func(*SubscribeResult) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
		e.h.Shutdown(bg)
		e.srv.Close()
	}()
	data := []byte(`{"payload":"` + strings.Repeat("x", 40) + `"}`)
	wait := func(n int64) {
		deadline := time.Now().Add(30 * time.Second)
		for got.Load() < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Microsecond)
		}
	}
	var ms0, ms1 runtime.MemStats
	b.ReportAllocs()
	b.ResetTimer()
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := e.h.Publish(bg, "bench", data, PublishOptions{}); err != nil {
			b.Fatal(err)
		}
		if i%128 == 127 {
			// Stay well within the subscribers' 1024-message queues.
			wait(int64(i-511) * int64(subs))
		}
	}
	wait(int64(b.N) * int64(subs))
	elapsed := time.Since(start)
	runtime.ReadMemStats(&ms1)
	b.StopTimer()
	deliveries := float64(b.N) * float64(subs)
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/deliveries, "allocs/delivery")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(b.N), "allocs/publication")
	b.ReportMetric(deliveries/elapsed.Seconds(), "deliveries/s")
	if slow := e.h.Stats().SlowDisconnects; slow > 0 {
		b.Fatalf("%d subscribers were too slow", slow)
	}
}
