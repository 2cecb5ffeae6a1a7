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

// handleWS upgrades /ws requests within the connection limit.
func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	info, ok := s.admit(w, r, false)
	if !ok {
		return
	}
	c, err := s.wsUp.Upgrade(w, r)
	s.upgraded(r, info, c, err)
}

// admit takes a connection slot for a WebSocket request to r's endpoint,
// or answers 503 and reports false.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, hub bool) (connInfo, bool) {
	if msg, reason := s.reserve(); msg != "" {
		s.metrics.HandshakeFailed(endpointNames[connInfo{hub: hub}.endpoint()], reason)
		s.log.Warn("ws refused", "status", http.StatusServiceUnavailable, "reason", msg,
			"path", r.URL.Path, "remote", r.RemoteAddr, "max_conns", s.cfg.MaxConns)
		w.Header().Set("Retry-After", "1")
		plain(w, http.StatusServiceUnavailable, msg)
		return connInfo{}, false
	}
	return connInfo{id: s.nextID.Add(1), start: time.Now().UnixNano(), hub: hub}, true
}

// upgraded registers a connection once its upgrade succeeded, or gives its
// slot back and logs why it failed.
func (s *Server) upgraded(r *http.Request, info connInfo, c *wsgate.Conn, err error) {
	if err != nil {
		s.release()
		s.metrics.HandshakeFailed(endpointNames[info.endpoint()], handshakeReason(err))
		if errors.Is(err, wsgate.ErrOriginNotAllowed) {
			s.log.Warn("ws origin rejected", "status", http.StatusForbidden,
				"origin", r.Header.Get("Origin"), "host", r.Host, "path", info.path(), "remote", r.RemoteAddr)
			return
		}
		s.log.Debug("ws bad handshake", "path", info.path(), "remote", r.RemoteAddr, "err", err)
		return
	}
	// Log before registering: onClose logs the close only for registered
	// connections, so the open line always comes first. Connection lines
	// are at debug level: at a reconnect storm's rate they would cost more
	// than the connections (docs/server.md, "Logging").
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("ws open", "id", info.id, "path", info.path(), "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"))
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
	s.active--
	if s.draining && s.active == 0 {
		close(s.drained)
	}
}

// register adds an upgraded connection to the registry, unless it has
// already ended. A /ws connection that arrives while the server shuts down
// is closed at once with 1001; the hub closes its own (3001).
func (s *Server) register(info connInfo, c *wsgate.Conn) {
	s.mu.Lock()
	if err, ended := s.early[c]; ended {
		delete(s.early, c)
		s.mu.Unlock()
		if s.tracking() {
			// Never in the registry, so never in the sums of the open
			// connections: it may join the totals a moment later.
			st := c.Stats()
			s.mu.Lock()
			s.noteClosedLocked(info, st, err)
			s.mu.Unlock()
		}
		s.logClose(info, c, err)
		s.release()
		return
	}
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
// handler's OnClose, for the hub): it unregisters and logs. A connection
// may end before its handler has registered it; the handler then finds it
// in early and logs the close itself.
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
	} else {
		s.early[c] = err
	}
	s.mu.Unlock()
	if registered {
		s.logClose(info, c, err)
		s.release()
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
