package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate"
)

// ramp calls open(i) for i in [0, n), at most rate times per second (no
// limit when rate is 0) and from at most workers goroutines at once. It
// stops early when ctx is done or when open returns false.
func ramp(ctx context.Context, n int, rate float64, workers int, open func(i int) bool) {
	workers = max(1, min(workers, n))
	jobs := make(chan int)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range jobs {
				if !stop.Load() && !open(i) {
					stop.Store(true)
				}
			}
		})
	}
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
feed:
	for i := 0; i < n && !stop.Load(); i++ {
		if rate > 0 {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					break feed
				}
			}
		}
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
}

// connCounter counts dials.
type connCounter struct {
	attempted   atomic.Uint64
	established atomic.Uint64
}

const emfileKind = "dial: out of file descriptors (EMFILE)"

// dialFailed records a failed dial and reports whether dialing should go
// on: running out of file descriptors ends a ramp, since every later dial
// would fail the same way.
func dialFailed(ctx context.Context, errs *errorCounter, err error) bool {
	if ctx.Err() != nil {
		return false // interrupted: not the server's fault
	}
	kind := dialErrorKind(err)
	errs.add(kind, err)
	return kind != emfileKind
}

// closeAll starts the closing handshake on every connection and waits for
// them to end, at most wait in total; stragglers are cut with CloseNow.
func closeAll(conns []*wsgate.Conn, wait time.Duration) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for i, c := range conns {
		if c == nil {
			continue
		}
		select {
		case <-c.Done():
		case <-deadline.C:
			for _, c := range conns[i:] {
				if c != nil {
					c.CloseNow()
				}
			}
			for _, c := range conns[i:] {
				if c != nil {
					<-c.Done()
				}
			}
			return
		}
	}
}

// procWatch follows the server's RSS and CPU over the measured window.
type procWatch struct {
	p      *proc
	stats  ProcStats
	cpu    cpuMeter
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	failed error
}

// watchProc starts sampling pid's RSS every 200ms; nil when pid is 0.
func watchProc(pid int) *procWatch {
	if pid <= 0 {
		return nil
	}
	w := &procWatch{stop: make(chan struct{}), done: make(chan struct{})}
	w.stats.PID = pid
	p, err := openProcess(pid)
	if err != nil {
		w.failed = err
		close(w.done)
		return w
	}
	w.p = p
	rss, err := p.rss()
	if err != nil {
		w.failed = err
	}
	w.stats.RSSBeforeKiB, w.stats.RSSPeakKiB = rss, rss
	w.cpu = startCPU(p)
	go w.sample()
	return w
}

func (w *procWatch) sample() {
	defer close(w.done)
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		if rss, err := w.p.rss(); err == nil {
			w.mu.Lock()
			w.stats.RSSPeakKiB = max(w.stats.RSSPeakKiB, rss)
			w.mu.Unlock()
		}
	}
}

// restartCPU starts the CPU window now (after a warmup, say).
func (w *procWatch) restartCPU() {
	if w != nil && w.p != nil {
		w.cpu = startCPU(w.p)
	}
}

// finish stops sampling and returns the statistics, reading the final RSS.
func (w *procWatch) finish(withCPU bool) (*ProcStats, error) {
	if w == nil {
		return nil, nil
	}
	close(w.stop)
	<-w.done
	if w.p == nil {
		return &w.stats, w.failed
	}
	defer w.p.close()
	if withCPU {
		w.stats.CPUPercent = w.cpu.percent()
	}
	rss, err := w.p.rss()
	if err == nil {
		w.stats.RSSAfterKiB = rss
		w.stats.RSSPeakKiB = max(w.stats.RSSPeakKiB, rss)
	} else if w.failed == nil {
		w.failed = err
	}
	return &w.stats, w.failed
}

// selfCPU measures the generator's own CPU use.
type selfCPU struct {
	p *proc
	m cpuMeter
}

func startSelf() *selfCPU {
	p, err := openProcess(os.Getpid())
	if err != nil {
		return &selfCPU{}
	}
	return &selfCPU{p: p, m: startCPU(p)}
}

// restart starts the window now.
func (s *selfCPU) restart() { s.m = startCPU(s.p) }

// stop returns the CPU used in the window, in percent of one core.
func (s *selfCPU) stop() *ProcStats {
	v := s.m.percent()
	if s.p != nil {
		s.p.close()
	}
	return &ProcStats{PID: os.Getpid(), CPUPercent: v}
}

// progressLine prints line() on w every second, overwriting the previous
// one, until the returned function is called.
func progressLine(w io.Writer, line func() string) (stop func()) {
	if w == nil {
		return func() {}
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		width := 0
		for {
			select {
			case <-quit:
				if width > 0 {
					fmt.Fprintf(w, "\r%s\r", strings.Repeat(" ", width))
				}
				return
			case <-t.C:
			}
			s := line()
			pad := max(0, width-len(s))
			width = len(s)
			fmt.Fprintf(w, "\r%s%s", s, strings.Repeat(" ", pad))
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// IsTerminal reports whether f is a terminal (a character device), the
// condition for printing a live progress line.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// rateMeter turns a growing counter into a per-second rate between calls.
type rateMeter struct {
	last  uint64
	lastT time.Time
}

func (m *rateMeter) rate(now uint64) float64 {
	t := time.Now()
	var r float64
	if !m.lastT.IsZero() {
		if dt := t.Sub(m.lastT).Seconds(); dt > 0 {
			r = float64(now-m.last) / dt
		}
	}
	m.last, m.lastT = now, t
	return r
}

// writeErrorKind names the reason a write failed.
func writeErrorKind(err error) string {
	switch {
	case errors.Is(err, wsgate.ErrSlowConsumer):
		return "write: send queue overflow"
	case errors.Is(err, wsgate.ErrClosed):
		return "write: connection closed"
	}
	return "write: other"
}

// warmUp waits out cfg.Warmup, then switches to the measured phase and
// restarts the server's and the generator's CPU meters, so that the
// measurement covers only the measured window.
func warmUp(ctx context.Context, cfg *Config, phase *atomic.Int32, srv *procWatch, self *selfCPU) {
	if cfg.Warmup <= 0 {
		return
	}
	sleepCtx(ctx, cfg.Warmup)
	phase.Store(phaseMeasure)
	srv.restartCPU()
	self.restart()
}
