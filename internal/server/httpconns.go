package server

import (
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// httpDrainGrace is how long, at most, an HTTP connection that is not a
// WebSocket may go on reading its request or writing its answer once the
// shutdown has begun. A slow client cannot hold the shutdown up longer.
const httpDrainGrace = time.Second

// refuseWriteTimeout bounds writing the 503 to a refused connection. The
// write goes to the empty send buffer of a fresh socket, so it never waits
// in practice; the bound keeps the accept loop safe should it ever do.
const refuseWriteTimeout = 10 * time.Millisecond

// refusalLogEvery spaces out the warnings about refused HTTP connections,
// so that a flood of them cannot flood the log too.
const refusalLogEvery = 10 * time.Second

// busyResponse is the whole answer to a connection over MaxHTTPConns: it
// is written before the request is read, so it must stand on its own.
var busyResponse = []byte("HTTP/1.1 503 Service Unavailable\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\n" +
	"Connection: close\r\n" +
	"Content-Length: 38\r\n\r\n" +
	"too many connections, try again later\n")

// httpConns counts the HTTP connections that are not WebSocket
// connections, through http.Server.ConnState: the connections stay the
// *net.TCPConn that net/http accepted, so an upgrade can take the socket's
// descriptor out of it. A connection enters at StateNew and leaves when it
// is hijacked (upgraded) or closed.
type httpConns struct {
	max int // 0 or negative: no limit
	log *slog.Logger

	mu       sync.Mutex
	conns    map[net.Conn]http.ConnState // counted connections and their state
	idle     map[net.Conn]struct{}       // the counted ones waiting for a request
	draining bool                        // Shutdown began: bound every connection
	deadline time.Time                   // the bound, while draining
	refused  int                         // refused since the last warning
	lastWarn time.Time

	// handshakes counts the connections whose first request an event
	// loop reads (wsgate.Server.Admit): they are HTTP connections too.
	handshakes int
}

func newHTTPConns(max int, log *slog.Logger) *httpConns {
	return &httpConns{
		max:   max,
		log:   log,
		conns: make(map[net.Conn]http.ConnState),
		idle:  make(map[net.Conn]struct{}),
	}
}

// connState is the http.Server's ConnState hook. net/http calls it with
// StateNew on the accept goroutine, before it reads anything.
func (h *httpConns) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		if !h.admit(c) {
			refuse(c)
		}
	case http.StateActive:
		h.mu.Lock()
		if _, ok := h.conns[c]; ok {
			h.conns[c] = st
			delete(h.idle, c)
			if h.draining {
				// The request's headers are in: net/http has set its own
				// deadlines for the body and the answer; ours are shorter.
				c.SetDeadline(h.deadline)
			}
		}
		h.mu.Unlock()
	case http.StateIdle:
		h.mu.Lock()
		if _, ok := h.conns[c]; ok {
			h.conns[c] = st
			h.idle[c] = struct{}{}
		}
		h.mu.Unlock()
	case http.StateHijacked, http.StateClosed:
		h.mu.Lock()
		delete(h.conns, c)
		delete(h.idle, c)
		h.mu.Unlock()
	}
}

// admitHandshake counts a connection accepted by an event loop, as admit
// does (wsgate.Server.Admit).
func (h *httpConns) admitHandshake() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.roomLocked() {
		return false
	}
	h.handshakes++
	return true
}

// releaseHandshake uncounts it (wsgate.Server.Release).
func (h *httpConns) releaseHandshake() {
	h.mu.Lock()
	h.handshakes--
	h.mu.Unlock()
}

// admit counts c, making room by closing an idle keep-alive connection if
// the limit is reached. It reports false when there is no room.
func (h *httpConns) admit(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.roomLocked() {
		return false
	}
	h.conns[c] = http.StateNew
	return true
}

// roomLocked makes room for one more connection if the limit is reached,
// by closing an idle keep-alive connection. It reports false (and notes a
// refusal) when there is none.
func (h *httpConns) roomLocked() bool {
	if h.max > 0 && len(h.conns)+h.handshakes >= h.max {
		var victim net.Conn
		for v := range h.idle {
			victim = v
			break
		}
		if victim == nil {
			h.noteRefusalLocked()
			return false
		}
		// Its StateClosed comes later from its own goroutine and finds
		// nothing to remove.
		delete(h.conns, victim)
		delete(h.idle, victim)
		victim.Close()
	}
	return true
}

// noteRefusalLocked counts a refused connection and warns at most once per
// refusalLogEvery.
func (h *httpConns) noteRefusalLocked() {
	h.refused++
	now := time.Now()
	if now.Sub(h.lastWarn) < refusalLogEvery {
		return
	}
	h.log.Warn("http connections refused", "status", http.StatusServiceUnavailable,
		"reason", "too many HTTP connections", "refused", h.refused, "max_http_conns", h.max)
	h.refused = 0
	h.lastWarn = now
}

// refuse answers a connection over the limit with a minimal 503 and closes
// it. A TLS connection (for which ConnState sees the *tls.Conn, whose
// Write would start a handshake) is only closed.
func refuse(c net.Conn) {
	if _, ok := c.(*net.TCPConn); ok {
		c.SetWriteDeadline(time.Now().Add(refuseWriteTimeout))
		c.Write(busyResponse)
	}
	c.Close()
}

// drain bounds every counted connection, and those that become active
// later, to deadline: reading the rest of a request or writing an answer
// past it fails and the connection closes, so http.Server.Shutdown does
// not wait for slow clients.
func (h *httpConns) drain(deadline time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.draining = true
	h.deadline = deadline
	for c := range h.conns {
		c.SetDeadline(deadline)
	}
}

// count returns the number of counted connections.
func (h *httpConns) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns) + h.handshakes
}

// countIn returns the number of counted connections in state st.
func (h *httpConns) countIn(st http.ConnState) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, s := range h.conns {
		if s == st {
			n++
		}
	}
	return n
}
