package server

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/internal/metrics"
)

var heartbeatMsg = []byte(HeartbeatMessage)

// echo sends every message back with its own type. It runs on a wsgate
// event loop and must not block: with the default PolicyClose a write never
// waits, a client that does not keep up is closed with 1008.
func echo(c *wsgate.Conn, typ wsgate.MessageType, data []byte) {
	c.Write(context.Background(), typ, data)
}

// handleWS serves /ws requests that reach net/http: the upgrades of a
// Handler mounted in a server of your own (Serve does them on the event
// loops), and the answer to requests that are not upgrades.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	s.serveUpgrade(w, r, s.upgradeWS)
}

// serveUpgrade does an upgrade on net/http's goroutine with the endpoint's
// UpgradeFunc, as wsgate.Server does for the upgrades that reach it.
func (s *Server) serveUpgrade(w http.ResponseWriter, r *http.Request, f wsgate.UpgradeFunc) {
	up, value, err := f(r)
	if err != nil {
		writeHTTPError(w, err)
		return
	}
	if _, err := up.UpgradeWithValue(w, r, value); err != nil {
		s.refused(r, value, err)
	}
}

// writeHTTPError answers a request an UpgradeFunc refused.
func writeHTTPError(w http.ResponseWriter, err error) {
	var he *wsgate.HTTPError
	if !errors.As(err, &he) {
		plain(w, http.StatusInternalServerError, "internal error")
		return
	}
	for k, vs := range he.Header {
		w.Header()[k] = vs
	}
	plain(w, he.Status, he.Message)
}

// upgradeWS decides on an upgrade to /ws (a wsgate.UpgradeFunc): the Host
// must be allowed and a connection slot free.
func (s *Server) upgradeWS(r *http.Request) (*wsgate.Upgrader, any, error) {
	if err := s.admit(r, false); err != nil {
		return nil, nil, err
	}
	return s.wsUp, nil, nil
}

// admit checks the Host and takes a connection slot for an upgrade to r's
// endpoint, or returns the refusal to answer with.
func (s *Server) admit(r *http.Request, hub bool) error {
	if p := s.hosts.Load(); !p.allows(r.Host) {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "host rejected",
			slog.Int("status", http.StatusMisdirectedRequest),
			slog.String("host", r.Host),
			slog.String("path", r.URL.Path),
			slog.String("remote", r.RemoteAddr))
		return &wsgate.HTTPError{Status: http.StatusMisdirectedRequest,
			Message: "misdirected request: this server does not answer for that host name",
			Header:  http.Header{"Connection": {"close"}}}
	}
	if msg, reason := s.reserve(); msg != "" {
		s.metrics.HandshakeFailed(endpointNames[connInfo{hub: hub}.endpoint()], reason)
		s.log.Warn("ws refused", "status", http.StatusServiceUnavailable, "reason", msg,
			"path", r.URL.Path, "remote", r.RemoteAddr, "max_conns", s.cfg.MaxConns)
		return &wsgate.HTTPError{Status: http.StatusServiceUnavailable, Message: msg, Header: http.Header{"Retry-After": {"1"}}}
	}
	return nil
}

// refused gives the slot of an upgrade that failed after admit back, and
// logs why (wsgate.Server.OnRefused).
func (s *Server) refused(r *http.Request, _ any, err error) {
	s.release()
	info := connInfo{hub: r.URL.Path == hubPath}
	s.metrics.HandshakeFailed(endpointNames[info.endpoint()], handshakeReason(err))
	if errors.Is(err, wsgate.ErrOriginNotAllowed) {
		s.log.Warn("ws origin rejected", "status", http.StatusForbidden,
			"origin", r.Header.Get("Origin"), "host", r.Host, "path", info.path(), "remote", r.RemoteAddr)
		return
	}
	s.log.Debug("ws bad handshake", "path", info.path(), "remote", r.RemoteAddr, "err", err)
}

// opened registers a connection when it opens (its OnOpen, before any
// other callback): /ws ones and hub ones.
func (s *Server) opened(c *wsgate.Conn, hub bool) {
	info := connInfo{id: s.nextID.Add(1), start: time.Now().UnixNano(), hub: hub}
	// Connection lines are at debug level: at a reconnect storm's rate
	// they would cost more than the connections (docs/server.md,
	// "Logging").
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("ws open", "id", info.id, "path", info.path(), "remote", c.RemoteAddr().String())
	}
	s.metrics.ConnOpened(endpointNames[info.endpoint()])
	s.register(info, c)
}

// reserve takes a connection slot. It returns "" on success, else the
// message to refuse the request with 503 and the reason for
// wsgate_handshake_failures_total.
func (s *Server) reserve() (msg, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.draining:
		return "server shutting down", metrics.ReasonShuttingDown
	case s.cfg.MaxConns > 0 && s.active >= s.cfg.MaxConns:
		return "too many connections, try again later", metrics.ReasonLimit
	}
	s.active++
	return "", ""
}

// release gives a slot back and wakes Shutdown when the last one is gone.
func (s *Server) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.releaseLocked()
}

func (s *Server) releaseLocked() {
	s.active--
	if s.draining && s.active == 0 {
		close(s.drained)
	}
}

// register adds an opened connection to the registry. A /ws connection
// that opens while the server shuts down is closed at once with 1001; the
// hub closes its own (3001).
func (s *Server) register(info connInfo, c *wsgate.Conn) {
	s.mu.Lock()
	s.conns[c] = info
	draining := s.draining && !info.hub
	if !info.hub && !s.draining && s.hbStop == nil && s.cfg.Heartbeat > 0 {
		s.hbStop = make(chan struct{})
		s.hbDone.Add(1)
		go s.heartbeat(s.hbStop)
	}
	s.mu.Unlock()
	if draining {
		c.CloseWithStatus(wsgate.StatusGoingAway, "server shutting down")
	}
}

// onClose is every connection's end (its OnClose, for /ws; the hub
// handler's OnClose, for the hub): it unregisters, gives the slot back and
// logs. OnOpen always ran first, so the connection is registered.
func (s *Server) onClose(c *wsgate.Conn, err error) {
	var st wsgate.Stats
	if s.tracking() {
		st = c.Stats() // before s.mu: it takes the connection's lock
	}
	s.mu.Lock()
	info, registered := s.conns[c]
	if registered {
		delete(s.conns, c)
		s.noteClosedLocked(info, st, err)
	}
	s.releaseLocked()
	s.mu.Unlock()
	if registered {
		s.logClose(info, c, err)
	}
}

// logClose writes the connection's close line (debug level).
func (s *Server) logClose(info connInfo, c *wsgate.Conn, err error) {
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	st := c.Stats()
	attrs := []slog.Attr{
		slog.Uint64("id", info.id),
		slog.String("path", info.path()),
		slog.String("remote", c.RemoteAddr().String()),
		slog.Duration("duration", time.Duration(time.Now().UnixNano()-info.start)),
		slog.Uint64("msgs_in", st.MessagesIn),
		slog.Uint64("msgs_out", st.MessagesOut),
		slog.Uint64("bytes_in", st.BytesIn),
		slog.Uint64("bytes_out", st.BytesOut),
	}
	if st.Dropped > 0 {
		attrs = append(attrs, slog.Uint64("dropped", st.Dropped))
	}
	var ce *wsgate.CloseError
	if errors.As(err, &ce) {
		attrs = append(attrs,
			slog.Int("code", int(ce.Code)),
			slog.String("reason", ce.Reason),
			slog.Bool("by_client", ce.Remote))
		if ce.Err != nil {
			attrs = append(attrs, slog.String("err", ce.Err.Error()))
		}
	} else if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	s.log.LogAttrs(context.Background(), slog.LevelDebug, "ws close", attrs...)
}

// heartbeat sends HeartbeatMessage on every registered /ws connection
// once per Config.Heartbeat until stop is closed. It is the only goroutine the
// Server runs for its connections.
func (s *Server) heartbeat(stop <-chan struct{}) {
	defer s.hbDone.Done()
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	var snap []*wsgate.Conn
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s.mu.Lock()
		snap = s.snapshotLocked(snap[:0], false)
		s.mu.Unlock()
		for _, c := range snap {
			// Errors need no handling here: a closing connection refuses
			// the write, and a slow one is closed by its queue policy.
			c.Write(context.Background(), wsgate.TextMessage, heartbeatMsg)
		}
		clear(snap)
	}
}
