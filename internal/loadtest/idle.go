package loadtest

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate"
)

func runIdle(ctx context.Context, cfg *Config, rep *Report) error {
	srcIPs := cfg.SrcIPs
	d, err := newDialer(cfg.URL, srcIPs)
	if err != nil {
		return err
	}
	errs := newErrorCounter()
	if limit, ok := fdLimit(); ok && uint64(cfg.N)+64 > limit {
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"-n %d needs about %d file descriptors but this process may open %d: expect EMFILE", cfg.N, cfg.N+64, limit))
	}
	var (
		cc      connCounter
		closing atomic.Bool
		alive   atomic.Int64
		ignored atomic.Uint64
		conns   = make([]*wsgate.Conn, cfg.N)
	)
	opts := wsgate.Options{
		OnMessage: func(*wsgate.Conn, wsgate.MessageType, []byte) { ignored.Add(1) },
		OnClose: func(_ *wsgate.Conn, err error) {
			alive.Add(-1)
			if !closing.Load() {
				errs.add(closeErrorKind(err), err)
			}
		},
		PingInterval:     -1,
		NetDialContext:   d.dialContext,
		TLSConfig:        cfg.TLSConfig,
		HandshakeTimeout: cfg.DialTimeout,
	}
	if cfg.Progress != nil {
		var rm rateMeter
		stop := progressLine(cfg.Progress, func() string {
			n := cc.established.Load()
			return fmt.Sprintf("idle  open %d/%d  %.0f conns/s  errors %d", alive.Load(), cfg.N, rm.rate(n), errs.count())
		})
		defer stop()
	}

	srv := watchProc(cfg.PID)
	start := time.Now()
	ramp(ctx, cfg.N, cfg.Rate, 64, func(i int) bool {
		cc.attempted.Add(1)
		c, err := wsgate.Dial(ctx, cfg.URL, &opts)
		if err != nil {
			return dialFailed(ctx, errs, err)
		}
		alive.Add(1)
		conns[i] = c
		cc.established.Add(1)
		return true
	})
	rampTime := time.Since(start)
	holdStart := time.Now()
	sleepCtx(ctx, cfg.Hold)
	rep.Seconds = time.Since(holdStart).Seconds()
	held := alive.Load()
	srvStats, srvErr := srv.finish(false)

	closing.Store(true)
	closeAll(conns, 10*time.Second)

	rep.Attempted, rep.Established = cc.attempted.Load(), cc.established.Load()
	rep.Held = uint64(max(held, 0))
	rep.Ignored = ignored.Load()
	rep.ops = rep.Attempted
	rep.Errors = errs.list()
	rep.RampSeconds = rampTime.Seconds()
	if srvStats != nil {
		if held > 0 && srvStats.RSSAfterKiB > 0 {
			srvStats.RSSPerConnKiB = float64(srvStats.RSSAfterKiB-srvStats.RSSBeforeKiB) / float64(held)
		}
		rep.Server = srvStats
	}
	if srvErr != nil {
		rep.Notes = append(rep.Notes, "server stats: "+srvErr.Error())
	}
	for _, e := range rep.Errors {
		if e.Kind == emfileKind {
			limit, _ := fdLimit()
			rep.Notes = append(rep.Notes, fmt.Sprintf(
				"the generator ran out of file descriptors after %d connections (limit %d per process): lower -n, or run several generators",
				rep.Established, limit))
		}
	}
	return nil
}
