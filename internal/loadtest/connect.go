package loadtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate"
)

// cycleFunc runs the exchange of one connect cycle on a fresh connection
// (seq numbers the cycle) and reports whether it succeeded; it counts its
// failures in errs.
type cycleFunc func(ctx context.Context, c *wsgate.Conn, seq uint32, errs *errorCounter) bool

// cycleSpec says what a connect-style run does on each connection.
type cycleSpec struct {
	// newCycle returns the exchange of one worker (called once per worker,
	// so that it may own buffers).
	newCycle func() cycleFunc
	// anchorMessage handles what the server sends the anchor connection,
	// and anchorHello, when set, is written to it once it is open.
	anchorMessage func(c *wsgate.Conn, typ wsgate.MessageType, data []byte)
	anchorHello   []byte
}

// runConnect measures handshakes per second: each worker dials, upgrades,
// exchanges one message, runs the closing handshake and waits for the
// connection to end, over and over.
func runConnect(ctx context.Context, cfg *Config, rep *Report) error {
	typ := wsgate.TextMessage
	if cfg.Binary {
		typ = wsgate.BinaryMessage
	}
	base := time.Now()
	return runCycles(ctx, cfg, rep, cycleSpec{
		newCycle: func() cycleFunc {
			buf := newPayload(max(cfg.Size, minPayload(cfg.Binary)))
			return func(ctx context.Context, c *wsgate.Conn, seq uint32, errs *errorCounter) bool {
				return echoOnce(ctx, c, typ, buf, cfg, seq, base, errs)
			}
		},
		anchorMessage: func(*wsgate.Conn, wsgate.MessageType, []byte) {},
	})
}

// runCycles runs cfg.Conns workers that each dial, run spec's exchange,
// run the closing handshake and wait for the connection to end, over and
// over, and reports cycles per second.
func runCycles(ctx context.Context, cfg *Config, rep *Report, spec cycleSpec) error {
	d, err := newDialer(cfg.URL, cfg.SrcIPs)
	if err != nil {
		return err
	}
	var (
		errs      = newErrorCounter()
		hs        = newLatencies()
		cycle     = newLatencies()
		phase     atomic.Int32
		left      atomic.Int64
		cc        connCounter
		completed atomic.Uint64 // cycles, all phases (progress)
		measured  atomic.Uint64
	)
	left.Store(cfg.Count)
	opts := wsgate.Options{
		PingInterval:     -1,
		NetDialContext:   d.dialContext,
		TLSConfig:        cfg.TLSConfig,
		HandshakeTimeout: cfg.DialTimeout,
		CloseTimeout:     2 * time.Second,
	}

	// One idle connection stays open for the whole run, so that wsgate's
	// engine (event loops and timer goroutine, which stop when the last
	// connection ends) is not torn down and restarted between cycles.
	anchor, err := wsgate.Dial(ctx, cfg.URL, &wsgate.Options{
		OnMessage:        spec.anchorMessage,
		PingInterval:     -1,
		NetDialContext:   d.dialContext,
		TLSConfig:        cfg.TLSConfig,
		HandshakeTimeout: cfg.DialTimeout,
	})
	if err != nil {
		cc.attempted.Add(1)
		dialFailed(ctx, errs, err)
	} else {
		if spec.anchorHello != nil {
			anchor.Write(ctx, wsgate.TextMessage, spec.anchorHello)
		}
		defer func() {
			anchor.Close()
			select {
			case <-anchor.Done():
			case <-time.After(5 * time.Second):
				anchor.CloseNow()
				<-anchor.Done()
			}
		}()
	}

	if cfg.Progress != nil {
		var rm rateMeter
		stop := progressLine(cfg.Progress, func() string {
			return fmt.Sprintf("connect %s  %.0f connects/s  errors %d", phaseName(phase.Load()), rm.rate(completed.Load()), errs.count())
		})
		defer stop()
	}

	stop := make(chan struct{})
	var stopOnce sync.Once
	halt := func() { stopOnce.Do(func() { close(stop) }) }
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	oneCycle := func(exchange cycleFunc, seq uint32) {
		t0 := time.Now()
		cc.attempted.Add(1)
		c, err := wsgate.Dial(ctx, cfg.URL, &opts)
		if err != nil {
			if !dialFailed(ctx, errs, err) {
				halt()
			}
			sleepCtx(ctx, 10*time.Millisecond) // do not spin on a dead server
			return
		}
		cc.established.Add(1)
		t1 := time.Now()
		ok := exchange(ctx, c, seq, errs)
		c.Close()
		wait := time.NewTimer(5 * time.Second)
		select {
		case <-c.Done():
		case <-wait.C:
			errs.add("close: no end within 5s", nil)
			c.CloseNow()
			<-c.Done()
			ok = false
		}
		wait.Stop()
		if ok {
			var ce *wsgate.CloseError
			if errors.As(c.Err(), &ce) && ce.Code != wsgate.StatusNormalClosure && ctx.Err() == nil {
				errs.add("close: "+closeErrorKind(ce), ce)
				ok = false
			}
		}
		t2 := time.Now()
		completed.Add(1)
		if !ok || phase.Load() != phaseMeasure {
			return
		}
		if cfg.Count > 0 && left.Add(-1) < 0 {
			halt()
			return
		}
		hs.shard(int(seq)).record(int64(t1.Sub(t0)))
		cycle.shard(int(seq)).record(int64(t2.Sub(t0)))
		measured.Add(1)
	}

	if cfg.Warmup > 0 {
		phase.Store(phaseWarmup)
	} else {
		phase.Store(phaseMeasure)
	}
	var wg sync.WaitGroup
	for w := range cfg.Conns {
		wg.Go(func() {
			exchange := spec.newCycle()
			for seq := uint32(w); !stopped() && ctx.Err() == nil; seq += uint32(cfg.Conns) {
				oneCycle(exchange, seq)
			}
		})
	}
	srv := watchProc(cfg.PID)
	self := startSelf()
	warmUp(ctx, cfg, &phase, srv, self)
	measureStart := time.Now()
	var deadline <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		deadline = t.C
	}
	select {
	case <-ctx.Done():
	case <-deadline:
	case <-stop:
	}
	elapsed := time.Since(measureStart)
	phase.Store(phaseStop)
	rep.Generator = self.stop()
	srvStats, srvErr := srv.finish(true)
	halt()
	wg.Wait()

	rep.Seconds = elapsed.Seconds()
	rep.Attempted, rep.Established = cc.attempted.Load(), cc.established.Load()
	rep.Messages = measured.Load()
	rep.ops = rep.Attempted
	rep.Latency = summarize(cycle.merged())
	rep.Handshake = summarize(hs.merged())
	rep.Errors = errs.list()
	rep.Server = srvStats
	if srvErr != nil {
		rep.Notes = append(rep.Notes, "server stats: "+srvErr.Error())
	}
	return nil
}

// echoOnce sends one message on c and waits for its reply, skipping
// anything else the server sends.
func echoOnce(ctx context.Context, c *wsgate.Conn, typ wsgate.MessageType, buf []byte, cfg *Config, seq uint32, base time.Time, errs *errorCounter) bool {
	stamp(buf, cfg.Binary, seq, int64(time.Since(base)))
	if err := c.Write(ctx, typ, buf); err != nil {
		errs.add(writeErrorKind(err), err)
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for {
		_, data, err := c.Read(rctx)
		if err != nil {
			if ctx.Err() == nil {
				if rctx.Err() != nil {
					errs.add("echo: no reply within 5s", err)
				} else {
					errs.add(closeErrorKind(c.Err()), err)
				}
			}
			return false
		}
		if got, _, ok := unstamp(data, cfg.Binary, len(buf)); ok {
			if got != seq {
				errs.add("reply: out of order or lost", fmt.Errorf("got sequence number %d, want %d", got, seq))
				return false
			}
			return true
		}
	}
}
