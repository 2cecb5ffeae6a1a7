// Package server is the wsgate echo server behind cmd/wsgate: the
// tutorial's /ws endpoint (echo every message, send "heartbeat" every
// second), its browser page, health endpoints and a graceful shutdown.
//
// A Server keeps no goroutine, timer or buffer per connection: connections
// run in wsgate's event-driven mode (Options.OnMessage), one ticker
// goroutine owned by the Server walks the connection registry to send the
// heartbeats, and the same registry serves the connection limit and the
// shutdown.
//
// Every HTTP connection that is not a WebSocket is bounded in time (read,
// write and idle timeouts), in header size and in number (MaxHTTPConns,
// counted through http.Server.ConnState so that an upgraded connection is
// still the *net.TCPConn wsgate takes the descriptor from), and every
// request must name an allowed Host (the DNS-rebinding defence).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/web"
)

// stragglerGrace bounds the wait for connections to finish after they were
// cut with CloseNow at the end of the shutdown timeout.
const stragglerGrace = time.Second

// Server is the echo server. Create it with New, then either call Serve
// with a listener or mount Handler in an http.Server of your own; Shutdown
// (or cancelling Serve's context) closes every connection gracefully.
//
// All methods may be called from any goroutine.
type Server struct {
	cfg    Config
	log    *slog.Logger
	wsOpts wsgate.Options // shared base; each connection gets a copy with its OnClose
	budget *wsgate.Budget // shared by every WebSocket connection; nil without one
	hs     *http.Server
	mux    *http.ServeMux
	root   http.Handler // mux behind the Host check
	http   *httpConns
	hosts  atomic.Pointer[hostPolicy]
	nextID atomic.Uint64

	mu       sync.Mutex
	conns    map[*wsgate.Conn]*connInfo // upgraded and registered connections
	active   int                        // reserved slots: upgrading plus registered
	draining bool                       // Shutdown began
	drained  chan struct{}              // closed when draining and active == 0
	hbStop   chan struct{}              // closed to stop the heartbeat goroutine; nil if not started
	serving  bool                       // Serve was called

	hbDone       sync.WaitGroup
	shutdownDone chan struct{} // closed when the first Shutdown returns
	shutdownErr  error         // its result, readable once shutdownDone is closed
}

// connInfo is the little the server remembers about a connection.
type connInfo struct {
	id    uint64
	start time.Time

	// Guarded by Server.mu. The connection may end before the handler has
	// registered it; then closed is set first and the handler logs the close.
	registered bool
	closed     bool
	err        error
}

// New returns a Server for cfg. log receives the server's log lines; nil
// means slog.Default(). New starts nothing: no listener, no goroutine.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		cfg:          cfg,
		log:          log,
		wsOpts:       cfg.wsOptions(),
		conns:        make(map[*wsgate.Conn]*connInfo),
		drained:      make(chan struct{}),
		shutdownDone: make(chan struct{}),
	}
	s.wsOpts.OnMessage = echo
	if cfg.MemoryBudget > 0 {
		s.budget = wsgate.NewBudget(cfg.MemoryBudget)
		s.wsOpts.Budget = s.budget
	}
	s.hosts.Store(hostPolicyFor(cfg.AllowedHosts, cfg.Addr))
	s.http = newHTTPConns(cfg.MaxHTTPConns, log)

	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/ws", s.handleWS)
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.mux.Handle("/", pageHeaders(http.FileServerFS(web.FS)))
	s.root = s.checkHost(s.mux)

	s.hs = &http.Server{
		Handler:           s.root,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ConnState:         s.http.connState,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Run listens on cfg.Addr and serves until ctx is cancelled, then shuts down
// gracefully within cfg.ShutdownTimeout and returns. It returns an error
// when the config is invalid, the address cannot be listened on, serving
// fails, or the shutdown had to cut connections off.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	// No TCP keepalive probes: WebSocket connections are watched by
	// ping/pong, and idle HTTP connections by IdleTimeout.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("server: listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Handler returns the server's HTTP handler: /ws, /healthz, /readyz and the
// page at /, behind the Host check (Config.AllowedHosts, resolved for
// Config.Addr). The limits on HTTP connections (timeouts, header size,
// MaxHTTPConns) belong to the http.Server that Serve runs; mounted in a
// server of your own, Handler has only those you set there.
func (s *Server) Handler() http.Handler { return s.root }

// Serve accepts connections on ln until ctx is cancelled or Shutdown is
// called, then returns once the shutdown has finished: nil for a clean
// shutdown, Shutdown's error otherwise. On ctx cancellation it runs
// Shutdown itself, bounded by Config.ShutdownTimeout. Serve closes ln.
// It may be called once per Server.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.serving || s.draining {
		s.mu.Unlock()
		ln.Close()
		return fmt.Errorf("server: serve: %w", http.ErrServerClosed)
	}
	s.serving = true
	s.mu.Unlock()

	if len(s.cfg.AllowedHosts) == 0 {
		// The default depends on the address actually served.
		s.hosts.Store(hostPolicyFor(nil, ln.Addr().String()))
	}
	s.logStartup(ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- s.hs.Serve(ln) }()

	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			// Shutdown was called directly: report its outcome.
			<-s.shutdownDone
			return s.shutdownErr
		}
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		return errors.Join(fmt.Errorf("server: serve: %w", err), s.Shutdown(sctx))
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		err := s.Shutdown(sctx)
		<-errc
		return err
	}
}

// Shutdown stops the server gracefully: /readyz and new /ws requests
// answer 503, the listener closes (idle HTTP connections with it, while
// in-flight HTTP requests get up to 1s, or half the time ctx leaves if that
// is less, to finish: a client sending a slow body is cut off then), and
// every WebSocket connection gets a close frame with 1001 (going away)
// after the messages already queued for it. Shutdown then waits for the connections to end until ctx is done,
// cuts the remaining ones off with CloseNow and returns an error wrapping
// ctx's error. Calling it again waits for the first call and returns its
// result.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		select {
		case <-s.shutdownDone:
			return s.shutdownErr
		case <-ctx.Done():
			return fmt.Errorf("server: shutdown: %w", ctx.Err())
		}
	}
	s.draining = true
	if s.hbStop != nil {
		close(s.hbStop)
	}
	if s.active == 0 {
		close(s.drained)
	}
	open := s.snapshotLocked(nil)
	s.mu.Unlock()

	start := time.Now()
	s.log.Info("shutting down", "conns", len(open), "timeout", deadlineLeft(ctx))
	for _, c := range open {
		c.CloseWithStatus(wsgate.StatusGoingAway, "server shutting down")
	}
	clear(open)
	grace := httpDrainGrace
	if left := deadlineLeft(ctx); left > 0 {
		grace = min(grace, left/2)
	}
	s.http.drain(time.Now().Add(grace))

	var errs []error
	if err := s.hs.Shutdown(ctx); err != nil {
		s.hs.Close()
		errs = append(errs, fmt.Errorf("server: shutdown: http: %w", err))
	}
	select {
	case <-s.drained:
	case <-ctx.Done():
		s.mu.Lock()
		left := s.snapshotLocked(nil)
		s.mu.Unlock()
		s.log.Warn("shutdown timeout: closing remaining connections", "conns", len(left))
		for _, c := range left {
			c.CloseNow()
		}
		t := time.NewTimer(stragglerGrace)
		select {
		case <-s.drained:
		case <-t.C:
			s.log.Error("connections still open after shutdown", "conns", s.ConnCount())
		}
		t.Stop()
		if len(errs) == 0 {
			errs = append(errs, fmt.Errorf("server: shutdown: %d connections cut off: %w", len(left), ctx.Err()))
		}
	}
	s.hbDone.Wait()
	s.shutdownErr = errors.Join(errs...)
	s.log.Info("shutdown complete", "duration", time.Since(start), "err", s.shutdownErr)
	close(s.shutdownDone)
	return s.shutdownErr
}

// HTTPConnCount returns the number of open HTTP connections that are not
// WebSocket connections, as counted for Config.MaxHTTPConns.
func (s *Server) HTTPConnCount() int { return s.http.count() }

// ConnCount returns the number of open WebSocket connections.
func (s *Server) ConnCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Budget returns the memory budget shared by the WebSocket connections, or
// nil when Config.MemoryBudget is negative.
func (s *Server) Budget() *wsgate.Budget { return s.budget }

// snapshotLocked appends the registered connections to buf.
func (s *Server) snapshotLocked(buf []*wsgate.Conn) []*wsgate.Conn {
	for c := range s.conns {
		buf = append(buf, c)
	}
	return buf
}

// deadlineLeft returns the time left before ctx's deadline, or 0 if none.
func deadlineLeft(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return time.Until(d).Round(time.Millisecond)
	}
	return 0
}

// logStartup writes the startup line and the warnings about the settings.
// It names no secret: the lines list their fields one by one.
func (s *Server) logStartup(addr net.Addr) {
	c := s.cfg
	hosts := s.hosts.Load()
	s.log.Info("wsgate listening",
		"addr", addr.String(),
		"version", c.Version,
		"heartbeat", c.Heartbeat,
		"allow_origins", c.AllowOrigins,
		"allowed_hosts", hosts.patterns(),
		"max_conns", c.MaxConns,
		"max_http_conns", c.MaxHTTPConns,
		"max_message_size", c.MaxMessageSize,
		"memory_budget", c.MemoryBudget,
		"max_header_bytes", c.MaxHeaderBytes,
		"handshake_timeout", c.HandshakeTimeout,
		"read_timeout", c.ReadTimeout,
		"write_timeout", c.WriteTimeout,
		"idle_timeout", c.IdleTimeout,
		"shutdown_timeout", c.ShutdownTimeout,
		"ping_interval", c.PingInterval,
		"ping_timeout", c.PingTimeout,
		"compression", c.Compression,
	)
	s.log.Info("host check", "allowed_hosts", hosts.patterns(), "policy", hosts.source)
	if hosts.any {
		s.log.Warn("host check off: any Host header is answered, so a web page can reach this server through DNS rebinding; set -allowed-hosts when it is reachable from browsers")
	}
	if c.allowAllOrigins() {
		s.log.Warn("origin check disabled: pages from any site may open WebSockets; use only without cookie or other ambient credentials")
	}
}

// handleHealthz answers 200 while the process runs.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	plain(w, http.StatusOK, "ok")
}

// handleReadyz answers 200 until the shutdown begins, then 503, so that a
// load balancer stops sending new clients.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		plain(w, http.StatusServiceUnavailable, "shutting down")
		return
	}
	plain(w, http.StatusOK, "ready")
}

// plain writes a short text/plain answer.
func plain(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}

// pageHeaders adds the page's security headers. The Content-Security-Policy
// lets the page load only its own files and connect to any WebSocket server
// (the URL field is editable): a second line of defence should a log line
// ever be rendered as HTML.
func pageHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			plain(w, http.StatusMethodNotAllowed, "method not allowed")
			return
		}
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
