package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wsgate/wsgate"
)

// Phases of an echo run. Replies count only while measuring; clients send
// while warming up or measuring.
const (
	phaseIdle int32 = iota
	phaseWarmup
	phaseMeasure
	phaseStop
)

// echoRun is the shared state of an echo or slow run.
type echoRun struct {
	cfg     *Config
	base    time.Time
	typ     wsgate.MessageType
	phase   atomic.Int32
	closing atomic.Bool // we are closing: ends are not errors
	lat     *latencies
	errs    *errorCounter
	left    atomic.Int64 // with Count: measured replies still wanted
	alive   atomic.Int64 // clients still able to send
	ignored atomic.Uint64
	clients []*echoClient
}

// echoClient is one closed-loop connection. Its methods run on the
// connection's event loop (replies) and on the run's goroutine (start);
// mu orders them.
type echoClient struct {
	run      *echoRun
	id       int
	shard    *latencyShard
	conn     *wsgate.Conn
	mu       sync.Mutex
	buf      []byte
	seq      uint32 // next sequence number to send
	want     uint32 // next sequence number expected back
	dead     bool
	replies  atomic.Uint64 // every reply, for the progress line
	measured atomic.Uint64 // replies while measuring
	sent     atomic.Uint64
}

func (r *echoRun) now() int64 { return int64(time.Since(r.base)) }

// onMessage handles a message from the server: a reply is timed and
// answered with the next message at once, on the event loop.
func (cl *echoClient) onMessage(c *wsgate.Conn, typ wsgate.MessageType, data []byte) {
	r := cl.run
	seq, ts, ok := unstamp(data, r.cfg.Binary, r.cfg.Size)
	if !ok {
		r.ignored.Add(1) // not ours: a heartbeat, a greeting…
		return
	}
	now := r.now()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if typ != r.typ {
		r.errs.add("reply: wrong message type", fmt.Errorf("sent %v, got %v back", r.typ, typ))
	}
	if seq != cl.want {
		r.errs.add("reply: out of order or lost", fmt.Errorf("got sequence number %d, want %d", seq, cl.want))
	}
	cl.want = seq + 1
	cl.replies.Add(1)
	ph := r.phase.Load()
	if ph == phaseMeasure {
		if r.cfg.Count > 0 && r.left.Add(-1) < 0 {
			ph = phaseStop
		} else {
			cl.shard.record(now - ts)
			cl.measured.Add(1)
		}
	}
	if ph == phaseWarmup || ph == phaseMeasure {
		cl.sendLocked(c, now)
	}
}

// onClose notes a connection that ended while the run still needed it.
func (cl *echoClient) onClose(_ *wsgate.Conn, err error) {
	r := cl.run
	cl.mu.Lock()
	wasDead := cl.dead
	cl.dead = true
	cl.mu.Unlock()
	if !wasDead {
		r.alive.Add(-1)
	}
	if !r.closing.Load() && r.phase.Load() != phaseStop {
		r.errs.add(closeErrorKind(err), err)
	}
}

// sendLocked writes the next message. cl.mu is held.
func (cl *echoClient) sendLocked(c *wsgate.Conn, now int64) {
	if cl.dead {
		return
	}
	r := cl.run
	stamp(cl.buf, r.cfg.Binary, cl.seq, now)
	cl.seq++
	if err := c.Write(context.Background(), r.typ, cl.buf); err != nil {
		cl.dead = true
		r.alive.Add(-1)
		if !r.closing.Load() && r.phase.Load() != phaseStop {
			r.errs.add(writeErrorKind(err), err)
		}
		return
	}
	cl.sent.Add(1)
}

// start puts Inflight messages in flight.
func (cl *echoClient) start() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for range cl.run.cfg.Inflight {
		cl.sendLocked(cl.conn, cl.run.now())
	}
}

// slowClient writes without ever reading: the server's replies pile up in
// its socket buffers and then in the server.
type slowClient struct {
	conn *wsgate.Conn
	buf  []byte
	seq  uint32
}

// slowState tracks the slow clients of a run.
type slowState struct {
	mu        sync.Mutex
	clients   []*slowClient
	sent      atomic.Uint64
	queueFull atomic.Uint64
	closed    int
	codes     map[string]int
	first     time.Duration
	started   time.Time
}

func (s *slowState) onClose(run *echoRun) func(*wsgate.Conn, error) {
	return func(_ *wsgate.Conn, err error) {
		if run.closing.Load() {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		s.closed++
		s.codes[slowCloseReason(err)]++
		if !s.started.IsZero() && s.first == 0 {
			s.first = time.Since(s.started)
		}
	}
}

// slowCloseReason names how a slow client's connection ended: the close
// code the server sent, or how the TCP connection went away.
func slowCloseReason(err error) string {
	var ce *wsgate.CloseError
	if !errors.As(err, &ce) {
		return "unknown"
	}
	if ce.Code != wsgate.StatusAbnormalClosure {
		return fmt.Sprint(int(ce.Code))
	}
	switch {
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "1006 reset"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "1006 closed"
	case errors.Is(err, wsgate.ErrWriteTimeout):
		return "1006 client write timeout"
	}
	return "1006"
}

// drive makes every slow client write SlowRate messages a second until
// stop is closed.
func (s *slowState) drive(cfg *Config, typ wsgate.MessageType, base time.Time, stop <-chan struct{}) {
	const tick = 10 * time.Millisecond
	per := max(1, cfg.SlowRate/int(time.Second/tick))
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for _, sc := range s.clients {
			for range per {
				stamp(sc.buf, cfg.Binary, sc.seq, int64(time.Since(base)))
				sc.seq++
				err := sc.conn.Write(context.Background(), typ, sc.buf)
				if errors.Is(err, wsgate.ErrQueueFull) {
					s.queueFull.Add(1)
					break
				}
				if err != nil {
					break // closed: onClose counted it
				}
				s.sent.Add(1)
			}
		}
	}
}

func runEcho(ctx context.Context, cfg *Config, rep *Report) error {
	d, err := newDialer(cfg.URL, cfg.SrcIPs)
	if err != nil {
		return err
	}
	r := &echoRun{
		cfg:  cfg,
		base: time.Now(),
		typ:  wsgate.TextMessage,
		lat:  newLatencies(),
		errs: newErrorCounter(),
	}
	if cfg.Binary {
		r.typ = wsgate.BinaryMessage
	}
	r.left.Store(cfg.Count)
	r.clients = make([]*echoClient, cfg.Conns)
	for i := range r.clients {
		r.clients[i] = &echoClient{run: r, id: i, shard: r.lat.shard(i), buf: newPayload(cfg.Size)}
	}
	var slow *slowState
	if cfg.Mode == ModeSlow {
		slow = &slowState{codes: make(map[string]int)}
	}
	var cc connCounter

	var stopProgress func()
	if cfg.Progress != nil {
		var rm rateMeter
		stopProgress = progressLine(cfg.Progress, func() string {
			var n uint64
			for _, cl := range r.clients {
				n += cl.replies.Load()
			}
			return fmt.Sprintf("%s  conns %d/%d  %.0f msgs/s  errors %d",
				phaseName(r.phase.Load()), cc.established.Load(), cfg.Conns+cfg.Slow, rm.rate(n), r.errs.count())
		})
		defer func() { stopProgress() }()
	}

	// Connect everyone before any traffic, so the measured window sees
	// the whole load.
	queue := max(1024, 2*cfg.Inflight)
	ramp(ctx, cfg.Conns, 0, 64, func(i int) bool {
		cl := r.clients[i]
		cc.attempted.Add(1)
		c, err := wsgate.Dial(ctx, cfg.URL, &wsgate.Options{
			OnMessage:         cl.onMessage,
			OnClose:           cl.onClose,
			PingInterval:      -1,
			NetDialContext:    d.dialContext,
			TLSConfig:         cfg.TLSConfig,
			HandshakeTimeout:  cfg.DialTimeout,
			SendQueueMessages: queue,
			ReadLimit:         int64(max(cfg.Size*2, 1<<20)),
		})
		if err != nil {
			return dialFailed(ctx, r.errs, err)
		}
		cl.conn = c
		cc.established.Add(1)
		r.alive.Add(1)
		return true
	})
	if slow != nil {
		slow.clients = make([]*slowClient, cfg.Slow)
		ramp(ctx, cfg.Slow, 0, 64, func(i int) bool {
			cc.attempted.Add(1)
			c, err := wsgate.Dial(ctx, cfg.URL, &wsgate.Options{
				OnClose:          slow.onClose(r),
				PingInterval:     -1,
				NetDialContext:   d.dialContext,
				TLSConfig:        cfg.TLSConfig,
				HandshakeTimeout: cfg.DialTimeout,
				// A full send queue refuses the write; the client never
				// gives up on a server that stops reading it, so every
				// disconnect is the server's doing.
				SendQueuePolicy: wsgate.PolicyDropNewest,
				WriteTimeout:    24 * time.Hour,
			})
			if err != nil {
				return dialFailed(ctx, r.errs, err)
			}
			slow.clients[i] = &slowClient{conn: c, buf: newPayload(cfg.Size)}
			cc.established.Add(1)
			return true
		})
		live := slow.clients[:0]
		for _, sc := range slow.clients {
			if sc != nil {
				live = append(live, sc)
			}
		}
		slow.clients = live
	}

	// Traffic.
	srv := watchProc(cfg.PID)
	if cfg.Warmup > 0 {
		r.phase.Store(phaseWarmup)
	} else {
		r.phase.Store(phaseMeasure)
	}
	self := startSelf()
	for _, cl := range r.clients {
		if cl.conn != nil {
			cl.start()
		}
	}
	stopSlow := make(chan struct{})
	var slowDone sync.WaitGroup
	if slow != nil {
		slow.mu.Lock()
		slow.started = time.Now()
		slow.mu.Unlock()
		slowDone.Go(func() { slow.drive(cfg, r.typ, r.base, stopSlow) })
	}
	warmUp(ctx, cfg, &r.phase, srv, self)
	measureStart := time.Now()
	r.waitMeasured(ctx)
	r.phase.Store(phaseStop)
	elapsed := time.Since(measureStart)
	rep.Generator = self.stop()
	srvStats, srvErr := srv.finish(true)
	close(stopSlow)
	slowDone.Wait()

	// Tear down.
	r.closing.Store(true)
	conns := make([]*wsgate.Conn, 0, cfg.Conns+cfg.Slow)
	for _, cl := range r.clients {
		conns = append(conns, cl.conn)
	}
	if slow != nil {
		for _, sc := range slow.clients {
			sc.conn.CloseNow() // it never reads: no handshake to wait for
			conns = append(conns, sc.conn)
		}
	}
	closeAll(conns, 5*time.Second)

	// Report.
	rep.Seconds = elapsed.Seconds()
	rep.Attempted, rep.Established = cc.attempted.Load(), cc.established.Load()
	var sent uint64
	for _, cl := range r.clients {
		rep.Messages += cl.measured.Load()
		sent += cl.sent.Load()
	}
	if cfg.Count > 0 {
		rep.Messages = min(rep.Messages, uint64(cfg.Count))
	}
	rep.ops = sent + rep.Attempted
	rep.Latency = summarize(r.lat.merged())
	rep.Ignored = r.ignored.Load()
	rep.Errors = r.errs.list()
	rep.Server = srvStats
	if srvErr != nil {
		rep.Notes = append(rep.Notes, "server stats: "+srvErr.Error())
	}
	if slow != nil {
		slow.mu.Lock()
		rep.Slow = &SlowReport{
			Clients:         len(slow.clients),
			Sent:            slow.sent.Load(),
			QueueFull:       slow.queueFull.Load(),
			ClosedByServer:  slow.closed,
			CloseCodes:      slow.codes,
			FirstCloseAfter: -1,
		}
		if slow.closed > 0 {
			rep.Slow.FirstCloseAfter = slow.first.Seconds()
		}
		slow.mu.Unlock()
	}
	if rep.Established > 0 && r.alive.Load() == 0 && rep.Messages == 0 {
		rep.Notes = append(rep.Notes, "every connection ended before the measurement did")
	}
	if g := rep.Generator.CPUPercent; g > 90 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the generator used %.0f%% of a core: it may be the bottleneck", g))
	}
	return nil
}

// waitMeasured waits until the measurement is over: Duration passed, Count
// replies arrived, every connection died, or ctx was cancelled.
func (r *echoRun) waitMeasured(ctx context.Context) {
	var deadline <-chan time.Time
	if r.cfg.Duration > 0 {
		t := time.NewTimer(r.cfg.Duration)
		defer t.Stop()
		deadline = t.C
	}
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-deadline:
			return
		case <-poll.C:
		}
		if r.cfg.Count > 0 && r.left.Load() <= 0 {
			return
		}
		if r.alive.Load() <= 0 {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func phaseName(p int32) string {
	return [...]string{"connecting", "warmup", "measuring", "stopping"}[p]
}
