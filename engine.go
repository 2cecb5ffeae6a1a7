package wsgate

import (
	crand "crypto/rand"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// engine owns the goroutines shared by connections: the event loops (on
// Linux) and the sweeper that runs every connection's timers. It starts them
// with the first connection and stops them when the last one has finished,
// so an idle program runs none of them.
type engine struct {
	mu      sync.Mutex
	conns   map[*Conn]struct{}
	pending int // connections between reserve and register or cancel
	loops   []*loop
	next    int
	every   time.Duration // sweep interval
	stop    chan struct{} // closed to stop this generation's sweeper
	retune  chan struct{} // tells this generation's sweeper that every shrank
}

var defaultEngine engine

// task is a request to an event loop, posted from any goroutine.
type task struct {
	c    *Conn
	kind taskKind
	data []byte        // taskAdd: input read past the handshake
	fl   *fastListener // taskListen, taskUnlisten
}

type taskKind uint8

const (
	taskAdd      taskKind = iota // start serving c
	taskClose                    // close c's descriptor and finish c
	taskResume                   // c may read again: its receive queue or its output has room
	taskFlush                    // write c's queue (Enqueue)
	taskListen                   // serve a listener (Server)
	taskUnlisten                 // stop serving a listener
	taskSweep                    // time out handshakes that take too long
	taskStop                     // no connection is left: exit
)

const (
	maxSweep = time.Second
	minSweep = 5 * time.Millisecond
)

// reserve makes room for a connection about to start and, when wantLoop,
// returns the event loop that will serve it, starting the loops if none
// run. It fails when the loops cannot be started (for example when the
// process is out of file descriptors). Every successful reserve is
// followed by register or cancel.
func (e *engine) reserve(wantLoop bool) (*loop, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var l *loop
	if wantLoop {
		if e.loops == nil {
			loops, err := startLoops()
			if err != nil {
				e.stopIfIdleLocked()
				return nil, err
			}
			e.loops = loops
		}
		l = e.loops[e.next%len(e.loops)]
		e.next++
	}
	e.pending++
	return l, nil
}

// reserveLoops starts the event loops if none run and keeps them running
// until cancel: a Server serving a listener on every loop holds one such
// reservation.
func (e *engine) reserveLoops() ([]*loop, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.loops == nil {
		loops, err := startLoops()
		if err != nil {
			e.stopIfIdleLocked()
			return nil, err
		}
		e.loops = loops
	}
	e.pending++
	e.startSweeperLocked(maxSweep) // it times the handshakes out
	return slices.Clone(e.loops), nil
}

// cancel gives back a reservation that was not used.
func (e *engine) cancel() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pending--
	e.stopIfIdleLocked()
}

// register turns a reservation into a running connection whose timers the
// sweeper runs.
func (e *engine) register(c *Conn) {
	g := granularity(c.cfg)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pending--
	if e.conns == nil {
		e.conns = make(map[*Conn]struct{})
	}
	e.startSweeperLocked(g)
	e.conns[c] = struct{}{}
}

// startSweeperLocked starts the sweeper if it does not run, and makes it
// tick at least every g.
func (e *engine) startSweeperLocked(g time.Duration) {
	if e.stop == nil {
		e.every = g
		e.stop = make(chan struct{})
		e.retune = make(chan struct{}, 1)
		go e.sweep(e.stop, e.retune, g)
	}
	if g < e.every {
		// The sweeper must not finish its current, longer period first:
		// c's timers would be late by up to that much.
		e.every = g
		select {
		case e.retune <- struct{}{}:
		default:
		}
	}
}

// unregister removes a finished connection and stops the engine when none
// is left.
func (e *engine) unregister(c *Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.conns, c)
	e.stopIfIdleLocked()
}

// stopIfIdleLocked stops the sweeper and the loops when no connection is
// running or about to.
func (e *engine) stopIfIdleLocked() {
	if len(e.conns) > 0 || e.pending > 0 {
		return
	}
	if e.stop != nil {
		close(e.stop)
	}
	for _, l := range e.loops {
		l.post(task{kind: taskStop})
	}
	e.conns, e.loops, e.stop, e.retune = nil, nil, nil, nil
}

// granularity is how often c's timers need checking.
func granularity(cfg *connConfig) time.Duration {
	g := maxSweep
	for _, d := range []time.Duration{cfg.PingInterval, cfg.PingTimeout, cfg.WriteTimeout, cfg.CloseTimeout, cfg.MessageTimeout} {
		if d > 0 && d/4 < g {
			g = d / 4
		}
	}
	return max(g, minSweep)
}

// sweep runs every connection's timers until stop is closed.
// A finer interval announced on retune takes effect at once.
func (e *engine) sweep(stop, retune chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var snap []*Conn
	var rel memoryReleaser
	for {
		select {
		case <-stop:
			return
		case <-retune:
			e.mu.Lock()
			if e.stop != stop {
				e.mu.Unlock()
				return
			}
			want := e.every
			e.mu.Unlock()
			if want != every {
				every = want
				t.Reset(every)
			}
			continue
		case <-t.C:
		}
		e.mu.Lock()
		if e.stop != stop {
			e.mu.Unlock()
			return
		}
		snap = snap[:0]
		for c := range e.conns {
			snap = append(snap, c)
		}
		want := e.every
		loops := e.loops
		e.mu.Unlock()
		now := nanotime()
		for _, c := range snap {
			tickSafely(c, now)
		}
		clear(snap)
		for _, l := range loops {
			if l.handshaking() {
				l.post(task{kind: taskSweep})
			}
		}
		if rel.due(time.Now(), largeTaken.Load(), time.Duration(memoryQuiet.Load())) {
			releaseMemory()
		}
		if want != every {
			every = want
			t.Reset(every)
		}
	}
}

// tickSafely runs c's timers; a panic there (a bug) costs c, not the
// sweeper that serves every connection.
func tickSafely(c *Conn, now int64) {
	defer func() {
		if r := recover(); r != nil {
			c.mu.Lock()
			c.abortLocked(fmt.Errorf("%w: timers: %v", ErrInternal, r))
			c.mu.Unlock()
		}
	}()
	c.tick(now)
}

// attach gives c its transport before the opening handshake is answered,
// so that a failure (no file descriptor left, no event loop) is an error
// for the caller rather than a broken connection: a socket the platform can
// poll gets a descriptor of its own and an event loop, anything else a
// reader goroutine. nc stays usable until run.
func (c *Conn) attach(nc net.Conn) error {
	fd, ok, err := dupFD(nc)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrEngine, err)
	}
	if ok {
		l, err := defaultEngine.reserve(true)
		if err != nil {
			closeFD(fd)
			return fmt.Errorf("%w: %w", ErrEngine, err)
		}
		c.fd, c.loop = fd, l
		return nil
	}
	c.nt = &netTransport{nc: nc, resume: make(chan struct{}, 1)}
	_, err = defaultEngine.reserve(false)
	return err
}

// detach undoes attach when the handshake fails after it.
func (c *Conn) detach() {
	if c.fd >= 0 {
		closeFD(c.fd)
		c.fd, c.loop = -1, nil
	}
	defaultEngine.cancel()
}

// run starts serving c. leftover holds bytes read past the handshake.
func (c *Conn) run(nc net.Conn, leftover []byte) {
	if len(leftover) > 0 {
		leftover = append([]byte(nil), leftover...)
	}
	defaultEngine.register(c)
	if c.fd >= 0 {
		// The loop has a descriptor of its own; this one goes.
		nc.Close()
		c.loop.post(task{c: c, kind: taskAdd, data: leftover})
		return
	}
	go c.readNet(leftover)
}

// Pools of buffers for queued frames and reassembled messages (three
// sizes: a small one for the usual burst of pushes, a large one for bigger
// backlogs and messages, and one of twice that, so that a 32 KiB message
// with its frame header, or a 32 KiB backlog that doubles, still comes from
// a pool instead of leaving garbage behind every time) and for compressed
// payloads. The frame buffers are pooled as array pointers, so that giving
// one back allocates nothing.
var (
	outSmall sync.Pool // *[outSmallSize]byte
	outLarge sync.Pool // *[outLargeSize]byte
	outHuge  sync.Pool // *[outHugeSize]byte
	bufPool  sync.Pool // *[]byte
)

const (
	outSmallSize = 4 << 10
	outLargeSize = 32 << 10
	outHugeSize  = 64 << 10
)

// getOut returns an empty buffer with room for at least n bytes.
func getOut(n int) []byte {
	switch {
	case n <= outSmallSize:
		if p, ok := outSmall.Get().(*[outSmallSize]byte); ok {
			return p[:0]
		}
		return new([outSmallSize]byte)[:0]
	case n <= outLargeSize:
		largeTaken.Add(outLargeSize)
		if p, ok := outLarge.Get().(*[outLargeSize]byte); ok {
			return p[:0]
		}
		return new([outLargeSize]byte)[:0]
	case n <= outHugeSize:
		largeTaken.Add(outHugeSize)
		if p, ok := outHuge.Get().(*[outHugeSize]byte); ok {
			return p[:0]
		}
		return new([outHugeSize]byte)[:0]
	}
	largeTaken.Add(uint64(n))
	return make([]byte, 0, n)
}

// isPooledOut reports whether b has the capacity of a pooled buffer, so
// that putOut would keep it.
func isPooledOut(b []byte) bool {
	switch cap(b) {
	case outSmallSize, outLargeSize, outHugeSize:
		return true
	}
	return false
}

// putOut gives a buffer from getOut back.
func putOut(b []byte) {
	switch cap(b) {
	case outSmallSize:
		outSmall.Put((*[outSmallSize]byte)(b[:outSmallSize]))
	case outLargeSize:
		outLarge.Put((*[outLargeSize]byte)(b[:outLargeSize]))
	case outHugeSize:
		outHuge.Put((*[outHugeSize]byte)(b[:outHugeSize]))
	}
}

func getBuffer() *[]byte {
	if p, ok := bufPool.Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, 0, 4096)
	return &b
}

func putBuffer(p *[]byte) {
	if cap(*p) <= 1<<20 {
		*p = (*p)[:0]
		bufPool.Put(p)
	}
}

// maskRands holds ChaCha8 generators seeded from crypto/rand: a
// cryptographically strong stream, as RFC 6455 section 5.3 asks of masking
// keys, without a system call per frame.
var maskRands = sync.Pool{New: func() any {
	var seed [32]byte
	crand.Read(seed[:])
	return rand.NewChaCha8(seed)
}}

// maskKey returns a fresh, unpredictable masking key.
func maskKey() uint32 {
	r := maskRands.Get().(*rand.ChaCha8)
	k := uint32(r.Uint64())
	maskRands.Put(r)
	return k
}

// largeTaken counts the bytes of large buffers (32 KiB and more) getOut
// has handed out: reassembled messages, large frames and inflated output.
// The runtime keeps such memory resident after the traffic stops, in the
// pools and as garbage, until its next collections.
var largeTaken atomic.Uint64

// memoryQuiet is how long large-buffer traffic must have stopped before
// the engine gives memory back (SetMemoryRelease); 0 disables it.
var memoryQuiet atomic.Int64

func init() { memoryQuiet.Store(int64(DefaultMemoryQuiet)) }

// memoryReleases counts the releases, for EngineStats.
var memoryReleases atomic.Uint64

const (
	// releaseMin is how many bytes of large buffers must have been taken
	// since the last release for another one to be worth its collections.
	releaseMin = 8 << 20
	// releaseSpacing is the least time between two releases, in quiet
	// periods (30 s by default): traffic in bursts with quiet gaps between
	// them costs at most two collections this often.
	releaseSpacing = 15
)

// memoryReleaser decides, on the sweeper's ticks, when traffic that took
// large buffers has stopped long enough to give memory back. It is the
// sweeper's own.
type memoryReleaser struct {
	seen     uint64    // largeTaken at the last tick
	pending  uint64    // bytes taken since the last release
	busy     time.Time // the last tick that saw large buffers taken
	released time.Time // the last release
}

// due reports whether to release now, given largeTaken and memoryQuiet:
// at least releaseMin bytes of large buffers were taken since the last
// release, none for quiet, and the last release is releaseSpacing quiet
// periods ago.
func (r *memoryReleaser) due(now time.Time, taken uint64, quiet time.Duration) bool {
	if taken != r.seen {
		r.pending += taken - r.seen
		r.seen = taken
		r.busy = now
		return false
	}
	if quiet <= 0 || r.pending < releaseMin || now.Sub(r.busy) < quiet ||
		(!r.released.IsZero() && now.Sub(r.released) < releaseSpacing*quiet) {
		return false
	}
	r.pending = 0
	r.released = now
	return true
}

// releaseMemory runs two collections, so that what the buffer pools kept
// (they survive one) is freed too, and returns free memory to the system.
func releaseMemory() {
	runtime.GC()
	debug.FreeOSMemory()
	memoryReleases.Add(1)
}
