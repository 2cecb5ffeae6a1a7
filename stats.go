package wsgate

import (
	"sync/atomic"
)

// eventLoops is the number of event loops started with the first
// connection; 0 means GOMAXPROCS.
var eventLoops atomic.Int32

// SetEventLoops sets how many event loops serve connections on Linux: n
// loops, or one per usable CPU (GOMAXPROCS, the default) when n <= 0. It
// takes effect when the loops start, that is with the first connection
// after none was open; loops already running keep their number.
func SetEventLoops(n int) {
	eventLoops.Store(int32(max(n, 0)))
}

// loopCounters are one event loop's counters, read by EngineStats.
type loopCounters struct {
	conns   atomic.Int64  // connections it serves
	wakeups atomic.Uint64 // times it woke up
	events  atomic.Uint64 // socket and task events it handled
}

// LoopStats is a snapshot of one event loop.
type LoopStats struct {
	Connections int    // connections the loop serves now
	Wakeups     uint64 // times the loop woke up since it started
	Events      uint64 // events handled since it started; Events/Wakeups is the batch per wake-up
}

// EngineStats is a snapshot of the goroutines every connection shares.
type EngineStats struct {
	// Connections counts the connections being served, on every
	// transport.
	Connections int
	// Loops has one entry per running event loop (none when no connection
	// is open, or on platforms without epoll).
	Loops []LoopStats
}

// ReadEngineStats returns the engine's counters, for metrics: cheap enough
// to call on every scrape.
func ReadEngineStats() EngineStats {
	e := &defaultEngine
	e.mu.Lock()
	defer e.mu.Unlock()
	st := EngineStats{Connections: len(e.conns)}
	for _, l := range e.loops {
		c := l.counters()
		st.Loops = append(st.Loops, LoopStats{
			Connections: int(c.conns.Load()),
			Wakeups:     c.wakeups.Load(),
			Events:      c.events.Load(),
		})
	}
	return st
}
