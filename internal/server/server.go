// Package server is the wsgate server behind cmd/wsgate: the tutorial's
// /ws endpoint (echo every message, send "heartbeat" every second), the
// hub's endpoints (/connection/websocket, Centrifugo's client protocol, and
// the server API at /api/, on the main address or its own), the browser
// page, health endpoints and a graceful shutdown.
//
// A Server keeps no goroutine, timer or buffer per connection: connections
// run in wsgate's event-driven mode (Options.OnMessage), one ticker
// goroutine owned by the Server walks the connection registry to send the
// heartbeats, and the same registry serves the connection limit and the
// shutdown. The hub (package hub, started by Serve) owns its own tickers;
// its connections are in the same registry, so they share the connection
// limit and the memory budget with /ws.
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
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/internal/metrics"
	"github.com/wsgate/wsgate/web"
)

// stragglerGrace bounds the wait for connections to finish after they were
// cut with CloseNow at the end of the shutdown timeout.
const stragglerGrace = time.Second

// Server is the wsgate server. Create it with New, then either call Serve
// with a listener or mount Handler in an http.Server of your own; Shutdown
// (or cancelling Serve's context) closes every connection gracefully. The
// hub starts with Serve: before it, /connection/websocket and /api/ answer
// 503.
//
// All methods may be called from any goroutine.
type Server struct {
	cfg    Config
	log    *slog.Logger
	wsUp   *wsgate.Upgrader // /ws: one set of options shared by every connection
	budget *wsgate.Budget   // shared by every WebSocket connection; nil without one
	hs     *http.Server
	ws     *wsgate.Server // serves hs, with the WebSocket handshakes on the event loops
	mux    *http.ServeMux
	root   http.Handler // mux behind the Host check
	http   *httpConns
	hosts  atomic.Pointer[hostPolicy]
	nextID atomic.Uint64

	broker   broker.Broker                // Config.Broker, the cluster's, or a Memory
	nats     *embeddedNATS                // the embedded NATS server; nil unless Config.Cluster.Embedded
	tokens   *auth.Verifier               // nil without a token key
	hub      atomic.Pointer[hubEndpoints] // set by Serve
	apiHS    *http.Server                 // the API's own server; nil without Config.APIAddr
	apiHTTP  *httpConns                   // its HTTP connections
	apiHosts atomic.Pointer[hostPolicy]
	apiBound atomic.Pointer[string] // the API listener's address, once listening
	brokerUp atomic.Bool            // the broker's health as /readyz last saw it

	// Operations: metrics.go, admin.go, tls.go.
	metrics    *metrics.Metrics        // nil with Config.DisableMetrics
	admin      *admin                  // nil without Config.Admin
	certs      *certStore              // nil without TLS
	brokerN    *metrics.BrokerCounters // set by startHub when tracking
	brokerSt   brokerStatsCache
	figures    figures
	adminHS    *http.Server // the admin address's server; nil without Config.AdminAddr
	adminHTTP  *httpConns
	adminHosts atomic.Pointer[hostPolicy]
	adminBound atomic.Pointer[string] // the admin listener's address, once listening
	tlsWatch   time.Duration          // how often the TLS files are checked
	bgStop     chan struct{}          // closed by Shutdown to stop the goroutines below
	bgDone     sync.WaitGroup         // the TLS watcher and the admin sampler

	mu       sync.Mutex
	conns    map[*wsgate.Conn]connInfo // upgraded and registered connections
	active   int                       // reserved slots: upgrading plus registered
	draining bool                      // Shutdown began
	drained  chan struct{}             // closed when draining and active == 0
	hbStop   chan struct{}             // closed to stop the heartbeat goroutine; nil if not started
	serving  bool                      // Serve was called
	closed   closedTotals              // counters of the closed connections, for /metrics

	hbDone       sync.WaitGroup
	shutdownDone chan struct{} // closed when the first Shutdown returns
	shutdownErr  error         // its result, readable once shutdownDone is closed
}

// connInfo is the little the server remembers about a connection, kept by
// value in the registry: no allocation of its own.
type connInfo struct {
	id    uint64
	start int64 // Unix nanoseconds
	hub   bool  // a hub connection: no heartbeats, the hub closes it
	rtt   int64 // the last ping round trip /metrics counted, in ns
}

// path returns the connection's endpoint.
func (i connInfo) path() string {
	if i.hub {
		return hubPath
	}
	return "/ws"
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
		conns:        make(map[*wsgate.Conn]connInfo),
		drained:      make(chan struct{}),
		shutdownDone: make(chan struct{}),
	}
	opts := cfg.wsOptions()
	opts.OnMessage = echo
	opts.OnOpen = func(c *wsgate.Conn) { s.opened(c, false) }
	opts.OnClose = s.onClose
	if cfg.EventLoops > 0 {
		wsgate.SetEventLoops(cfg.EventLoops)
	}
	wsgate.SetMemoryRelease(cfg.MemoryRelease) // negative: off
	if cfg.MemoryBudget > 0 {
		s.budget = wsgate.NewBudget(cfg.MemoryBudget)
		opts.Budget = s.budget
	}
	if s.wsUp, err = wsgate.NewUpgrader(&opts); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.hosts.Store(hostPolicyFor(cfg.AllowedHosts, cfg.Addr))
	s.http = newHTTPConns(cfg.MaxHTTPConns, log)
	if s.broker, err = s.newBroker(); err != nil {
		return nil, err
	}
	s.brokerUp.Store(true)
	if t := cfg.Tokens; t.HMACSecret != "" || t.RSAPublicKey != nil || t.ECDSAPublicKey != nil {
		if s.tokens, err = auth.New(t); err != nil {
			return nil, fmt.Errorf("server: tokens: %w", err)
		}
	}

	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/ws", s.handleWS)
	s.mux.HandleFunc(hubPath, s.handleHubWS)
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.mux.Handle("/", pageHeaders(http.FileServerFS(web.FS)))
	if cfg.APIAddr == "" {
		s.mux.HandleFunc(apiPath, s.handleAPI)
	} else {
		s.mux.HandleFunc(apiPath, func(w http.ResponseWriter, r *http.Request) { plain(w, http.StatusNotFound, "404 page not found") })
	}
	s.root = s.checkHost(&s.hosts, s.mux)
	s.hs = s.newHTTPServer(s.root, s.http)
	// The WebSocket endpoints' handshakes are done by wsgate's event loops;
	// everything else goes to s.hs (wsgate.Server). The connections whose
	// first request a loop reads count against MaxHTTPConns (Admit).
	s.ws = &wsgate.Server{
		HTTP:             s.hs,
		Upgrades:         map[string]wsgate.UpgradeFunc{"/ws": s.upgradeWS, hubPath: s.upgradeHub},
		HandshakeTimeout: cfg.HandshakeTimeout,
		MaxHeaderBytes:   cfg.MaxHeaderBytes,
		MaxHandshakes:    1 << 30, // Admit bounds them
		Admit:            s.http.admitHandshake,
		Release:          s.http.releaseHandshake,
		OnRefused:        s.refused,
	}
	if err := s.initOps(); err != nil {
		return nil, err
	}

	if cfg.APIAddr != "" {
		s.apiHosts.Store(hostPolicyFor(nil, cfg.APIAddr))
		s.apiHTTP = newHTTPConns(cfg.MaxHTTPConns, log)
		apiMux := http.NewServeMux()
		apiMux.HandleFunc(apiPath, s.handleAPI)
		s.apiHS = s.newHTTPServer(s.checkHost(&s.apiHosts, apiMux), s.apiHTTP)
	}
	return s, nil
}

// newHTTPServer returns an http.Server for h with the configured limits,
// counting its connections in conns.
func (s *Server) newHTTPServer(h http.Handler, conns *httpConns) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.cfg.HandshakeTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ConnState:         conns.connState,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
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
	stop := s.reloadOnSIGHUP()
	defer stop()
	return s.Serve(ctx, ln)
}

// Handler returns the server's HTTP handler: /ws, /connection/websocket,
// /api/ (unless Config.APIAddr moves it), /healthz, /readyz and the page at
// /, behind the Host check (Config.AllowedHosts, resolved for
// Config.Addr). The limits on HTTP connections (timeouts, header size,
// MaxHTTPConns) belong to the http.Server that Serve runs; mounted in a
// server of your own, Handler has only those you set there. The hub's
// endpoints answer 503 until Serve has started the hub.
func (s *Server) Handler() http.Handler { return s.root }

// Serve starts the hub (and its broker), listens on Config.APIAddr when
// set, and accepts connections on ln until ctx is cancelled or Shutdown is
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
	if err := s.startHub(ctx); err != nil {
		ln.Close()
		return err
	}
	var apiLn net.Listener
	if s.apiHS != nil {
		var err error
		lc := net.ListenConfig{KeepAlive: -1}
		if apiLn, err = lc.Listen(ctx, "tcp", s.cfg.APIAddr); err != nil {
			ln.Close()
			s.stopHub()
			return fmt.Errorf("server: listen on the API address: %w", err)
		}
		addr := apiLn.Addr().String()
		s.apiBound.Store(&addr)
		s.apiHosts.Store(hostPolicyFor(nil, addr))
	}
	adminLn, aerr := s.listenAdmin(ctx)
	if aerr != nil {
		ln.Close()
		if apiLn != nil {
			apiLn.Close()
		}
		s.stopHub()
		return aerr
	}
	ln, apiLn, adminLn = s.wrapTLS(ln), s.wrapTLS(apiLn), s.wrapTLS(adminLn)
	s.startBackground()
	s.logStartup(ln.Addr())
	servers := 1
	errc := make(chan error, 3)
	go func() { errc <- s.ws.Serve(ln) }()
	if apiLn != nil {
		servers++
		go func() { errc <- s.apiHS.Serve(apiLn) }()
	}
	if adminLn != nil {
		servers++
		go func() { errc <- s.adminHS.Serve(adminLn) }()
	}

	var err error
	select {
	case err = <-errc:
		servers--
		if errors.Is(err, http.ErrServerClosed) {
			// Shutdown was called directly: report its outcome.
			<-s.shutdownDone
			err = s.shutdownErr
			break
		}
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		err = errors.Join(fmt.Errorf("server: serve: %w", err), s.Shutdown(sctx))
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
		defer cancel()
		err = s.Shutdown(sctx)
	}
	for range servers {
		<-errc
	}
	return err
}

// APIAddr returns the address the server API's own listener is bound to,
// or nil when it has none (Config.APIAddr unset, or Serve not started).
func (s *Server) APIAddr() net.Addr {
	if p := s.apiBound.Load(); p != nil {
		addr, err := net.ResolveTCPAddr("tcp", *p)
		if err == nil {
			return addr
		}
	}
	return nil
}

// Shutdown stops the server gracefully: /readyz and new WebSocket requests
// answer 503, every /ws connection gets a close frame with 1001 (going
// away) after the messages already queued for it, the listeners close
// (idle HTTP connections with them, while in-flight HTTP requests, API
// calls among them, get up to 1s, or half the time ctx leaves if that is
// less, to finish: a client sending a slow body is cut off then), and then
// the hub shuts down: its clients are disconnected with 3001 (shutdown),
// and its broker closes once they have gone. Shutdown waits for every
// connection to end until ctx is done, cuts the remaining ones off with
// CloseNow and returns an error wrapping ctx's error. Calling it again
// waits for the first call and returns its result.
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
	total := len(s.conns)
	open := s.snapshotLocked(nil, false)
	s.mu.Unlock()

	start := time.Now()
	s.log.Info("shutting down", "conns", total, "hub_conns", total-len(open), "timeout", deadlineLeft(ctx))
	for _, c := range open {
		c.CloseWithStatus(wsgate.StatusGoingAway, "server shutting down")
	}
	clear(open)
	grace := httpDrainGrace
	if left := deadlineLeft(ctx); left > 0 {
		grace = min(grace, left/2)
	}
	s.http.drain(time.Now().Add(grace))
	if s.apiHTTP != nil {
		s.apiHTTP.drain(time.Now().Add(grace))
	}
	if s.adminHTTP != nil {
		s.adminHTTP.drain(time.Now().Add(grace))
	}

	// The listeners first, so that no API call is cut off by the hub
	// closing under it; then the hub.
	var errs []error
	var errMu sync.Mutex
	var wg sync.WaitGroup
	type server interface {
		Shutdown(context.Context) error
		Close() error
	}
	servers := []server{s.ws}
	for _, hs := range []*http.Server{s.apiHS, s.adminHS} {
		if hs != nil {
			servers = append(servers, hs)
		}
	}
	for _, hs := range servers {
		wg.Go(func() {
			if err := hs.Shutdown(ctx); err != nil {
				hs.Close()
				errMu.Lock()
				errs = append(errs, fmt.Errorf("server: shutdown: http: %w", err))
				errMu.Unlock()
			}
		})
	}
	wg.Wait()
	hubDone := true
	if hp := s.hub.Load(); hp != nil {
		if err := hp.hub.Shutdown(ctx); err != nil {
			hubDone = false
		}
	}
	select {
	case <-s.drained:
	case <-ctx.Done():
		s.mu.Lock()
		left := s.snapshotLocked(nil, true)
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
	if !hubDone {
		// Its clients are gone now (or cut off): let its goroutines end and
		// its broker close.
		gctx, cancel := context.WithTimeout(context.Background(), stragglerGrace)
		if err := s.hub.Load().hub.Shutdown(gctx); err != nil {
			s.log.Error("hub still running after shutdown", "err", err)
		}
		cancel()
	}
	s.stopEmbedded() // after the hub, whose broker is its client
	s.hbDone.Wait()
	s.stopBackground()
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

// snapshotLocked appends the registered connections to buf: every one
// with withHub, else only the /ws ones.
func (s *Server) snapshotLocked(buf []*wsgate.Conn, withHub bool) []*wsgate.Conn {
	for c, info := range s.conns {
		if withHub || !info.hub {
			buf = append(buf, c)
		}
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
		"event_loops", c.EventLoops,
		"memory_release", max(c.MemoryRelease, 0),
		"tls", s.certs != nil,
		"metrics", s.metricsWhere(),
		"admin_addr", s.adminAddrString(),
		"admin", c.Admin,
		"pprof", c.Pprof,
	)
	s.logHub()
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

// handleReadyz answers 200 while the server serves, so that a load
// balancer sends it clients, and 503 before the hub has started, once the
// shutdown has begun, and while the broker reports itself unhealthy
// (broker.HealthChecker).
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	switch {
	case draining:
		plain(w, http.StatusServiceUnavailable, "shutting down")
	case s.hub.Load() == nil:
		plain(w, http.StatusServiceUnavailable, "starting")
	case !s.brokerHealthy():
		plain(w, http.StatusServiceUnavailable, "broker unavailable")
	default:
		plain(w, http.StatusOK, "ready")
	}
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
