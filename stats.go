package wsgate

import (
	"sync/atomic"
	"time"
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

// DefaultMemoryQuiet is how long traffic that used large buffers must have
// stopped before the engine gives memory back (SetMemoryRelease).
const DefaultMemoryQuiet = 2 * time.Second

// SetMemoryRelease sets how long traffic that used large buffers
// (reassembled messages, frames of 32 KiB and more, inflated output) must
// have stopped before the engine gives the memory it left behind back to
// the system: after at least 8 MiB of such buffers and quiet long, the
// sweeper runs two garbage collections and returns free pages
// (debug.FreeOSMemory), at most once per 15 quiet periods (30 s by
// default). Without it the runtime keeps that memory resident
// until its own next collections, up to two minutes on an idle server, so
// memory per idle connection stays well above what the connections hold.
// 0 or less disables it; the default is DefaultMemoryQuiet.
func SetMemoryRelease(quiet time.Duration) {
	memoryQuiet.Store(int64(max(quiet, 0)))
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
	// MemoryReleases counts the times the engine gave memory back after
	// large-buffer traffic stopped (SetMemoryRelease).
	MemoryReleases uint64
}

// ReadEngineStats returns the engine's counters, for metrics: cheap enough
// to call on every scrape.
func ReadEngineStats() EngineStats {
	e := &defaultEngine
	e.mu.Lock()
	defer e.mu.Unlock()
	st := EngineStats{Connections: len(e.conns), MemoryReleases: memoryReleases.Load()}
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
