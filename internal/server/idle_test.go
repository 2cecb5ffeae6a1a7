package server

import (
	"runtime"
	"testing"
)

// TestIdleConnectionsAreCheap checks the design that lets one process hold
// tens of thousands of idle connections: no goroutine per connection and a
// small heap footprint. Client and server run in this process, so each
// connection is counted twice (both ends).
func TestIdleConnectionsAreCheap(t *testing.T) {
	const n = 500
	ts := startServer(t, Config{Heartbeat: -1})
	dial(t, ts.wsURL(), nil) // warm up: the engine and the pools exist
	waitFor(t, "the first connection", func() bool { return ts.ConnCount() == 1 })

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	for range n {
		dial(t, ts.wsURL(), nil)
	}
	waitFor(t, "every connection to register", func() bool { return ts.ConnCount() == n+1 })
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	g1 := runtime.NumGoroutine()

	perPair := (int64(after.HeapInuse) - int64(before.HeapInuse)) / n
	t.Logf("%d idle connections: %d goroutines more, %d heap bytes per client+server pair", n, g1-g0, perPair)
	if g1-g0 > 10 {
		t.Errorf("%d idle connections started %d goroutines; want none per connection", n, g1-g0)
	}
	if perPair > 8<<10 {
		t.Errorf("%d heap bytes per idle client+server pair, want at most 8 KiB", perPair)
	}
}
