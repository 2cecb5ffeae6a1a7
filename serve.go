package wsgate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Server serves HTTP/1.1 on a listener and does the WebSocket handshakes
// of its Upgrades endpoints on wsgate's event loops: an upgrade accepted
// there costs no goroutine, no net/http request processing and no hand-over
// of the socket from Go's poller to the loops, which makes connecting
// markedly cheaper. Every other request — another path, a request to an
// endpoint that is not an upgrade, everything after the first request of a
// keep-alive connection — goes to HTTP, an ordinary *http.Server, with its
// handler, timeouts and limits, unchanged. Upgrades that reach HTTP that
// way (and every upgrade on platforms without event loops, or on a TLS
// listener) are done by HTTP's goroutine with the same UpgradeFunc, so the
// endpoints behave the same either way.
//
// Use Serve with the listener, and Shutdown or Close to stop. A Server may
// serve one listener.
type Server struct {
	// HTTP serves every request that is not done on the fast path; its
	// Handler must be set. Serve runs HTTP.Serve on an internal listener
	// that yields the connections handed over, so HTTP's ConnState hook
	// sees exactly those.
	HTTP *http.Server

	// Upgrades maps a request path (exact match) to the function that
	// decides on its WebSocket upgrades.
	Upgrades map[string]UpgradeFunc

	// HandshakeTimeout bounds the time from accepting a connection to the
	// end of its first request's head. Defaults to HTTP.ReadHeaderTimeout,
	// or 10s.
	HandshakeTimeout time.Duration

	// MaxHeaderBytes bounds the size of a first request's head. Defaults to
	// HTTP.MaxHeaderBytes, or 32 KiB. A larger head is answered with 431.
	MaxHeaderBytes int

	// MaxHandshakes bounds the connections whose first request is being
	// read; beyond it new connections get 503. Defaults to 1024.
	MaxHandshakes int

	// Admit, when set, is asked for every connection the event loops
	// accept, before its first request is read: false refuses it at once
	// with 503. Release is then called once, when the connection leaves
	// that stage (upgraded, handed to HTTP, refused or timed out). Servers
	// use them to count these connections with the HTTP ones.
	Admit   func() bool
	Release func()

	// OnRefused, when set, is called when an upgrade that its UpgradeFunc
	// accepted fails afterwards: the handshake itself is invalid (err
	// wraps ErrBadHandshake), the origin is refused (ErrOriginNotAllowed),
	// or the connection could not be served (ErrEngine, an I/O error).
	// value is what the UpgradeFunc returned: give back what it took. It
	// runs where the UpgradeFunc ran and must not block.
	OnRefused func(r *http.Request, value any, err error)

	mu       sync.Mutex
	state    int // 0 new, 1 serving, 2 closed
	ln       net.Listener
	handoff  *chanListener
	fast     *fastListener // nil when the listener cannot be served by the loops
	httpDone chan error
}

// UpgradeFunc decides on a WebSocket upgrade request: r's path is one of
// Server.Upgrades and it asks for an upgrade. It returns the Upgrader whose
// options the connection gets and the connection's Value; or an error,
// answered with its status when it is an *HTTPError and with 500
// otherwise. It runs on an event loop (or on HTTP's goroutine) and must not
// block. r's body is empty; r.Context is not cancelled with the connection.
type UpgradeFunc func(r *http.Request) (*Upgrader, any, error)

// HTTPError is an HTTP answer that refuses a request.
type HTTPError struct {
	Status  int         // the HTTP status code
	Message string      // a short plain-text body
	Header  http.Header // extra headers, for example Retry-After
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("wsgate: HTTP %d: %s", e.Status, e.Message)
}

func (e *HTTPError) handshakeError() *handshakeError {
	return &handshakeError{status: e.Status, msg: e.Message, header: e.Header, cause: e}
}

// refusal turns an UpgradeFunc's error into the answer to send.
func refusal(err error) *handshakeError {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.handshakeError()
	}
	return &handshakeError{status: http.StatusInternalServerError, msg: "internal error", cause: err}
}

// ErrServerClosed is returned by Server.Serve after Shutdown or Close. It
// is http.ErrServerClosed.
var ErrServerClosed = http.ErrServerClosed

// Serve serves ln until Shutdown or Close, and then returns
// ErrServerClosed (or the error that stopped it). It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	if s.HTTP == nil || s.HTTP.Handler == nil {
		return errors.New("wsgate: Server.HTTP and its Handler are required")
	}
	s.mu.Lock()
	if s.state != 0 {
		s.mu.Unlock()
		ln.Close()
		return fmt.Errorf("wsgate: Serve: %w", ErrServerClosed)
	}
	s.state = 1
	s.ln = ln
	inner := s.HTTP.Handler
	s.HTTP.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.serveSlow(w, r, inner)
	})
	handoff := newChanListener(ln.Addr())
	fast, err := s.listenFast(ln, handoff)
	if err != nil || fast == nil {
		// No event loops for this listener: net/http serves everything.
		s.mu.Unlock()
		return s.HTTP.Serve(ln)
	}
	s.fast = fast
	s.handoff = handoff
	s.httpDone = make(chan error, 1)
	s.mu.Unlock()
	go func() { s.httpDone <- s.HTTP.Serve(handoff) }()
	err = <-s.httpDone
	s.stopFast()
	ln.Close()
	s.mu.Lock()
	stopped := s.state == 2
	s.mu.Unlock()
	if stopped && errors.Is(err, net.ErrClosed) {
		// Shutdown and Close close the hand-off listener before they tell
		// HTTP, which then reports the closed listener as its own failure.
		err = ErrServerClosed
	}
	return err
}

// serveSlow is HTTP's handler: upgrades to an Upgrades endpoint that
// reached net/http are done here, the rest goes to the application.
func (s *Server) serveSlow(w http.ResponseWriter, r *http.Request, inner http.Handler) {
	if f := s.Upgrades[r.URL.Path]; f != nil && isUpgradeRequest(r) {
		up, value, err := f(r)
		if err != nil {
			refusal(err).write(w)
			return
		}
		if _, err := up.UpgradeWithValue(w, r, value); err != nil && s.OnRefused != nil {
			s.OnRefused(r, value, err)
		}
		return
	}
	inner.ServeHTTP(w, r)
}

// refused tells the application that an accepted upgrade failed.
func (s *Server) refused(r *http.Request, value any, err error) {
	if s.OnRefused != nil {
		s.OnRefused(r, value, err)
	}
}

// isUpgradeRequest reports whether r asks for a WebSocket upgrade.
func isUpgradeRequest(r *http.Request) bool {
	return headerHasToken(r.Header, "Upgrade", "websocket")
}

// Shutdown stops accepting, closes the connections whose first request was
// still being read, and shuts HTTP down gracefully (see
// http.Server.Shutdown). WebSocket connections are not touched: close them
// yourself.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stop()
	return s.HTTP.Shutdown(ctx)
}

// Close stops accepting and closes HTTP at once (see http.Server.Close).
func (s *Server) Close() error {
	s.stop()
	return s.HTTP.Close()
}

func (s *Server) stop() {
	s.mu.Lock()
	s.state = 2
	h := s.handoff
	s.mu.Unlock()
	s.stopFast()
	if h != nil {
		h.Close()
	}
}

// handshakeTimeout and friends apply the documented defaults.
func (s *Server) handshakeTimeout() time.Duration {
	switch {
	case s.HandshakeTimeout > 0:
		return s.HandshakeTimeout
	case s.HTTP.ReadHeaderTimeout > 0:
		return s.HTTP.ReadHeaderTimeout
	}
	return DefaultHandshakeTimeout
}

func (s *Server) maxHeaderBytes() int {
	switch {
	case s.MaxHeaderBytes > 0:
		return s.MaxHeaderBytes
	case s.HTTP.MaxHeaderBytes > 0:
		return s.HTTP.MaxHeaderBytes
	}
	return 32 << 10
}

func (s *Server) maxHandshakes() int {
	if s.MaxHandshakes > 0 {
		return s.MaxHandshakes
	}
	return 1024
}

// chanListener is the net.Listener HTTP serves: it yields the connections
// the event loops hand over.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// give hands a connection to HTTP; it reports false (and closes nc) when
// the listener is closed.
func (l *chanListener) give(nc net.Conn) bool {
	select {
	case l.conns <- nc:
		return true
	case <-l.done:
		nc.Close()
		return false
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// replayConn is a connection handed to HTTP after the event loop read its
// first bytes: Read returns those first.
type replayConn struct {
	*net.TCPConn
	mu      sync.Mutex
	pending []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil
		}
		c.mu.Unlock()
		return n, nil
	}
	c.mu.Unlock()
	return c.TCPConn.Read(p)
}

// SyscallConn lets an upgrade done by HTTP take the socket to an event
// loop, once every replayed byte was read (dupFD checks).
func (c *replayConn) SyscallConn() (syscall.RawConn, error) { return c.TCPConn.SyscallConn() }

// replaying reports whether bytes read by the loop are still to be read.
func (c *replayConn) replaying() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending) > 0
}

// headEnd returns the length of the request head at the start of b (the
// blank line included), or -1 when it is not complete. Like net/http, it
// accepts lines ending in a bare LF.
func headEnd(b []byte) int {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		if j := bytes.Index(b[:i+4], []byte("\n\n")); j >= 0 {
			return j + 2
		}
		return i + 4
	}
	if j := bytes.Index(b, []byte("\n\n")); j >= 0 {
		return j + 2
	}
	return -1
}
