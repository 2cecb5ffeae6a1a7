package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
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

	// -traffic and -compress: connections driven by hand (idle_traffic.go).
	byHand := cfg.Traffic > 0 || cfg.Compress
	var (
		u        *url.URL
		raw      []net.Conn
		deflated atomic.Int64
	)
	if byHand {
		if u, err = url.Parse(cfg.URL); err != nil {
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
		raw = make([]net.Conn, cfg.N)
	}

	slabBefore := slabKiB()
	srv := watchProc(cfg.PID)
	start := time.Now()
	ramp(ctx, cfg.N, cfg.Rate, 64, func(i int) bool {
		cc.attempted.Add(1)
		if byHand {
			nc, deflate, err := trafficConn(ctx, d, u, cfg)
			if err != nil {
				return dialFailed(ctx, errs, err)
			}
			if deflate {
				deflated.Add(1)
			}
			raw[i] = nc
			alive.Add(1)
			cc.established.Add(1)
			return true
		}
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
	if byHand {
		// Nothing watches these sockets while they idle: count the ones
		// the server ended.
		for _, nc := range raw {
			if nc != nil && peerClosed(nc) {
				alive.Add(-1)
				errs.add("closed by the server while idle", errors.New("the server closed an idle connection"))
			}
		}
	}
	held := alive.Load()
	if slabAfter := slabKiB(); slabBefore >= 0 && slabAfter >= 0 && held > 0 {
		rep.KernelSlabPerConnKiB = float64(slabAfter-slabBefore) / float64(held)
	}
	srvStats, srvErr := srv.finish(false)

	closing.Store(true)
	closeAll(conns, 10*time.Second)
	for _, nc := range raw {
		if nc != nil {
			nc.Close()
		}
	}
	if byHand {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d messages of %d B in %d fragments per connection before idling; permessage-deflate offered: %t, agreed on %d connections",
			cfg.Traffic, cfg.Size, cfg.Fragments, cfg.Compress, deflated.Load()))
	}

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
