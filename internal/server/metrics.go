package server

import (
	"context"
	"errors"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/internal/metrics"
)

// The server's figures for /metrics and /admin are read when they are
// asked for, not counted per message: the message and byte counters are
// the connections' own (wsgate.Conn.Stats), summed over the registry, plus
// the totals of the connections that have closed, which onClose adds up
// in the same critical section that removes a connection from the
// registry, so that the sums never go backwards.

// endpoint indexes the per-endpoint totals.
const (
	epWS = iota
	epHub
	numEndpoints
)

var endpointNames = [numEndpoints]string{metrics.EndpointWS, metrics.EndpointHub}

func (i connInfo) endpoint() int {
	if i.hub {
		return epHub
	}
	return epWS
}

// closedTotals are the counters of the connections that have closed, by
// endpoint. Guarded by Server.mu.
type closedTotals [numEndpoints]struct {
	msgsIn, bytesIn, msgsOut, bytesOut, dropped, slow uint64
}

// add counts a closed connection's final counters.
func (t *closedTotals) add(ep int, st wsgate.Stats, err error) {
	e := &t[ep]
	e.msgsIn += st.MessagesIn
	e.bytesIn += st.BytesIn
	e.msgsOut += st.MessagesOut
	e.bytesOut += st.BytesOut
	e.dropped += st.Dropped
	if ep == epWS && errors.Is(err, wsgate.ErrSlowConsumer) {
		e.slow++ // the hub counts its own (hub.Stats.SlowDisconnects)
	}
}

// figures holds what snapshots reuse between calls. Its mutex serializes
// snapshots, so that a ping round trip is counted once.
type figures struct {
	mu    sync.Mutex
	conns []*wsgate.Conn
	infos []connInfo
	rtts  []int64
}

// tracking reports whether the server keeps figures: for /metrics or for
// the admin page.
func (s *Server) tracking() bool { return s.metrics != nil || s.admin != nil }

// snapshot fills snap with the current figures. With rtt, snap.RTTs gets
// the ping round trips measured since the previous snapshot that asked
// for them.
func (s *Server) snapshot(snap *metrics.Snapshot, rtt bool) {
	f := &s.figures
	f.mu.Lock()
	defer f.mu.Unlock()

	s.mu.Lock()
	totals := s.closed
	f.conns, f.infos = f.conns[:0], f.infos[:0]
	for c, info := range s.conns {
		f.conns = append(f.conns, c)
		f.infos = append(f.infos, info)
	}
	s.mu.Unlock()

	var eps [numEndpoints]metrics.Endpoint
	for i := range eps {
		t := totals[i]
		eps[i] = metrics.Endpoint{
			Name: endpointNames[i], MessagesIn: t.msgsIn, BytesIn: t.bytesIn,
			MessagesOut: t.msgsOut, BytesOut: t.bytesOut, Dropped: t.dropped, SlowDisconnects: t.slow,
		}
	}
	f.rtts = f.rtts[:0]
	for i, c := range f.conns {
		// Stats outside s.mu: it takes the connection's lock.
		st := c.Stats()
		info := f.infos[i]
		e := &eps[info.endpoint()]
		e.Open++
		e.MessagesIn += st.MessagesIn
		e.BytesIn += st.BytesIn
		e.MessagesOut += st.MessagesOut
		e.BytesOut += st.BytesOut
		e.Dropped += st.Dropped
		r := int64(st.RTT)
		if rtt && r != 0 && r != info.rtt {
			snap.RTTs = append(snap.RTTs, st.RTT)
			f.rtts = append(f.rtts, r)
		} else {
			f.rtts = append(f.rtts, 0)
		}
	}
	if rtt && len(snap.RTTs) > 0 {
		// Remember each connection's last counted round trip, in the
		// registry: a connection's latest RTT is counted once.
		s.mu.Lock()
		for i, c := range f.conns {
			if r := f.rtts[i]; r != 0 {
				if info, ok := s.conns[c]; ok {
					info.rtt = r
					s.conns[c] = info
				}
			}
		}
		s.mu.Unlock()
	}
	clear(f.conns)

	snap.Endpoints = append(snap.Endpoints, eps[:]...)
	snap.HTTPConns = s.http.count()
	if s.apiHTTP != nil {
		snap.HTTPConns += s.apiHTTP.count()
	}
	if b := s.budget; b != nil {
		snap.Budget = &metrics.Budget{Used: b.Used(), Limit: b.Limit(), Evictions: b.Evictions()}
	}
	snap.Engine = wsgate.ReadEngineStats()
	if hp := s.hub.Load(); hp != nil {
		st := hp.hub.Stats()
		snap.Hub = &st
		snap.Endpoints[epHub].SlowDisconnects += st.SlowDisconnects
		b := &metrics.Broker{Up: true}
		if hc, ok := s.broker.(broker.HealthChecker); ok {
			b.HealthKnown = true
			b.Up = hc.Healthy() == nil
		}
		if n := s.brokerN; n != nil {
			b.Received, b.PublishErrors, b.Gaps = n.Received(), n.PublishErrors(), n.Gaps()
		}
		if sr, ok := s.broker.(broker.StatsReporter); ok {
			b.Stats = s.brokerSt.get(sr)
		}
		snap.Broker = b
	}
	if s.certs != nil {
		snap.TLS = s.certs.figures()
	}
}

// closeCode returns the close code a connection ended with: the code of
// its *wsgate.CloseError, else 1006 (no close frame).
func closeCode(err error) int {
	var ce *wsgate.CloseError
	if errors.As(err, &ce) {
		return int(ce.Code)
	}
	return int(wsgate.StatusAbnormalClosure)
}

// noteClosed counts a connection that has ended, with its final counters
// st (taken before s.mu). The caller holds s.mu.
func (s *Server) noteClosedLocked(info connInfo, st wsgate.Stats, err error) {
	if !s.tracking() {
		return
	}
	ep := info.endpoint()
	s.closed.add(ep, st, err)
	code := closeCode(err)
	s.metrics.ConnClosed(endpointNames[ep], code)
	if ep == epHub && code == 3500 { // hub.DisconnectInvalidToken
		s.metrics.HandshakeFailed(metrics.EndpointHub, metrics.ReasonAuth)
	}
}

// handshakeReason names why an upgrade failed, for
// wsgate_handshake_failures_total.
func handshakeReason(err error) string {
	switch {
	case errors.Is(err, wsgate.ErrOriginNotAllowed):
		return metrics.ReasonOrigin
	case errors.Is(err, wsgate.ErrEngine):
		return metrics.ReasonUnavailable
	}
	return metrics.ReasonBadRequest
}

// apiMethods are the server API's method names, the values of the method
// label; requests for other paths count as "unknown".
var apiMethods = map[string]bool{
	"publish": true, "broadcast": true, "subscribe": true, "unsubscribe": true,
	"disconnect": true, "presence": true, "presence_stats": true, "history": true,
	"history_remove": true, "channels": true, "info": true,
}

// statusRecorder remembers the status an HTTP handler answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// countAPI serves an API request with h and counts it by method and status.
func (s *Server) countAPI(w http.ResponseWriter, r *http.Request, h http.Handler) {
	if s.metrics == nil {
		h.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w}
	h.ServeHTTP(rec, r)
	method := path.Base(r.URL.Path)
	if !apiMethods[method] {
		method = "unknown"
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	s.metrics.APIRequest(method, rec.status, time.Since(start))
}

// brokerStatsCache keeps the broker's last figures (broker.StatsReporter),
// asked again at most every brokerStatsEvery: with NATS each call is a
// request to the history stream's leader, and a scrape or the admin page
// must not wait long on it.
type brokerStatsCache struct {
	mu   sync.Mutex
	at   time.Time
	last *broker.Stats // nil until the broker answers
}

const (
	brokerStatsEvery   = 2 * time.Second
	brokerStatsTimeout = time.Second
)

// get returns the figures, refreshed when they are older than
// brokerStatsEvery. When the broker fails to answer, the previous figures
// stay (nil if it never answered).
func (c *brokerStatsCache) get(sr broker.StatsReporter) *broker.Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < brokerStatsEvery {
		return c.last
	}
	c.at = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), brokerStatsTimeout)
	defer cancel()
	if st, err := sr.BrokerStats(ctx); err == nil {
		c.last = &st
	}
	return c.last
}
