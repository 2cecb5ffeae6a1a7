package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/internal/metrics"
)

// initOps sets up what operators use: the metrics, the TLS certificate, the
// admin page and the admin address's server. New calls it once the main
// mux exists.
func (s *Server) initOps() error {
	c := s.cfg
	if !c.DisableMetrics {
		s.metrics = metrics.New(metrics.Config{
			Version:  c.Version,
			Snapshot: func(snap *metrics.Snapshot) { s.snapshot(snap, true) },
		})
	}
	if c.Admin {
		s.admin = newAdmin(c.AdminPassword)
	}
	if c.TLSCertFile != "" {
		cs, err := newCertStore(c.TLSCertFile, c.TLSKeyFile, s.log)
		if err != nil {
			return fmt.Errorf("server: TLS: %w", err)
		}
		s.certs = cs
		s.tlsWatch = DefaultTLSWatchInterval
	}
	if c.AdminAddr == "" {
		if s.metrics != nil {
			s.mux.Handle("GET /metrics", s.metrics.Handler())
		}
		return nil
	}
	s.adminHosts.Store(hostPolicyFor(nil, c.AdminAddr))
	s.adminHTTP = newHTTPConns(c.MaxHTTPConns, s.log)
	s.adminHS = s.newHTTPServer(s.checkHost(&s.adminHosts, s.adminMux()), s.adminHTTP)
	if c.Pprof {
		// A CPU profile or trace takes 30 s by default (up to 60 s here).
		s.adminHS.WriteTimeout = max(s.adminHS.WriteTimeout, 65*time.Second)
	}
	return nil
}

// listenAdmin listens on Config.AdminAddr, or returns nil without one.
func (s *Server) listenAdmin(ctx context.Context) (net.Listener, error) {
	if s.adminHS == nil {
		return nil, nil
	}
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("server: listen on the admin address: %w", err)
	}
	addr := ln.Addr().String()
	s.adminBound.Store(&addr)
	s.adminHosts.Store(hostPolicyFor(nil, addr))
	return ln, nil
}

// AdminAddr returns the address the admin listener is bound to, or nil
// when it has none (Config.AdminAddr unset, or Serve not started).
func (s *Server) AdminAddr() net.Addr {
	if p := s.adminBound.Load(); p != nil {
		if addr, err := net.ResolveTCPAddr("tcp", *p); err == nil {
			return addr
		}
	}
	return nil
}

// wrapTLS returns ln serving TLS when the server has a certificate; nil
// stays nil.
func (s *Server) wrapTLS(ln net.Listener) net.Listener {
	if ln == nil || s.certs == nil {
		return ln
	}
	return tls.NewListener(ln, s.certs.tlsConfig())
}

// startBackground starts the goroutines of the operations features: the
// TLS file watcher and the admin page's sampler. Shutdown stops them.
func (s *Server) startBackground() {
	if s.certs == nil && s.admin == nil {
		return
	}
	s.bgStop = make(chan struct{})
	if s.certs != nil {
		s.bgDone.Go(func() { s.certs.watch(s.bgStop, s.tlsWatch) })
	}
	if s.admin != nil {
		s.bgDone.Go(func() { s.adminSampler(s.bgStop) })
	}
}

// stopBackground stops what startBackground started and waits for it.
func (s *Server) stopBackground() {
	if s.bgStop != nil {
		close(s.bgStop)
	}
	s.bgDone.Wait()
}

// reloadOnSIGHUP makes SIGHUP reload the TLS certificate (or log that
// there is nothing to reload) until the returned function is called.
// Without it, SIGHUP would end the process, as it does for any Go program.
func (s *Server) reloadOnSIGHUP() (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-hup:
				if s.certs == nil {
					s.log.Info("SIGHUP: nothing to reload (no TLS certificate)")
					continue
				}
				s.ReloadTLS() // logs its outcome
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		close(done)
		<-finished
	}
}

// countBroker returns the broker the hub uses: b, counted for /metrics and
// the admin page when the server keeps figures.
func (s *Server) countBroker(b broker.Broker) broker.Broker {
	if !s.tracking() {
		return b
	}
	wrapped, n := metrics.CountBroker(b)
	s.brokerN = n
	return wrapped
}

// metricsWhere says where /metrics is served, for the startup line.
func (s *Server) metricsWhere() string {
	switch {
	case s.metrics == nil:
		return "off"
	case s.adminHS != nil:
		return "admin address"
	}
	return "main address"
}

// adminAddrString is the admin address for the startup line.
func (s *Server) adminAddrString() string {
	if p := s.adminBound.Load(); p != nil {
		return *p
	}
	return s.cfg.AdminAddr
}

// scheme is "https" when the server serves TLS, else "http".
func (s *Server) scheme() string {
	if s.certs != nil {
		return "https"
	}
	return "http"
}
