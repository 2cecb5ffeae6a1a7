// Package metrics exports the wsgate server's figures to Prometheus. It is
// the only package besides the server that imports the Prometheus client,
// so that the library packages (wsgate, hub, broker) stay free of it.
//
// Almost everything is read at scrape time: the server hands a Snapshot
// function to New, and every scrape calls it once, so the message and byte
// counters cost nothing per message (they are the connections' own
// counters, summed when Prometheus asks). Only rare events are counted as
// they happen: connections opened and closed, refused handshakes, and
// server API requests.
//
// A nil *Metrics is valid and records nothing, so that the server calls it
// unconditionally.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/hub"
)

// Endpoint names, the values of the endpoint label.
const (
	EndpointWS  = "ws"  // /ws, the echo endpoint
	EndpointHub = "hub" // /connection/websocket, Centrifugo's protocol
)

// Reasons a WebSocket handshake was refused, the values of the reason label
// of wsgate_handshake_failures_total.
const (
	ReasonOrigin       = "origin"        // the Origin is not allowed (403)
	ReasonLimit        = "limit"         // the connection limit was reached (503)
	ReasonShuttingDown = "shutting_down" // the server is shutting down (503)
	ReasonUnavailable  = "unavailable"   // no transport: out of descriptors (503)
	ReasonBadRequest   = "bad_request"   // a malformed or refused handshake (4xx)
	ReasonAuth         = "auth"          // a hub client's token was refused (3500)
)

// Endpoint is one WebSocket endpoint's figures: its open connections, and
// the counters of its connections since the server started (open ones and
// closed ones together).
type Endpoint struct {
	Name            string
	Open            int
	MessagesIn      uint64
	BytesIn         uint64
	MessagesOut     uint64
	BytesOut        uint64
	Dropped         uint64 // messages discarded by the send queue policy
	SlowDisconnects uint64 // connections closed because they did not read
}

// Budget is the memory budget's figures.
type Budget struct {
	Used, Limit int64
	Evictions   uint64
}

// Broker is the broker's figures.
type Broker struct {
	// HealthKnown is false when the broker cannot tell its health (it does
	// not implement broker.HealthChecker): it is then reported as up.
	HealthKnown   bool
	Up            bool
	Received      uint64 // publications the broker delivered to this node
	PublishErrors uint64 // failed Publish calls
	Gaps          uint64 // times it reported possibly lost deliveries
	// Stats are the broker's own figures, nil when it does not report
	// them (broker.StatsReporter) or has not answered yet.
	Stats *broker.Stats
}

// TLS is the serving certificate's figures.
type TLS struct {
	NotAfter     time.Time // the certificate's expiry
	Reloads      uint64    // certificates loaded since the start
	ReloadErrors uint64    // failed reloads (the previous certificate stays)
}

// Snapshot is what the server knows at one instant. The Snapshot function
// given to New fills it; fields it leaves nil or empty are not exported.
type Snapshot struct {
	Endpoints []Endpoint
	HTTPConns int                // open HTTP connections that are not WebSockets
	Budget    *Budget            // nil without a memory budget
	Hub       *hub.Stats         // nil before the hub has started
	Engine    wsgate.EngineStats // wsgate.ReadEngineStats()
	Broker    *Broker            // nil before the hub has started
	TLS       *TLS               // nil without TLS
	// RTTs are the ping round trips measured since the previous snapshot,
	// one per connection that answered a ping in between.
	RTTs []time.Duration
}

// Config configures New. Snapshot is required.
type Config struct {
	// Version is the value of wsgate_build_info's version label.
	Version string
	// Snapshot fills s with the current figures. It is called once per
	// scrape, never concurrently with itself.
	Snapshot func(s *Snapshot)
}

// Metrics holds the server's Prometheus registry. All its methods are safe
// for concurrent use, and safe on a nil *Metrics (they do nothing).
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler

	opened     *prometheus.CounterVec
	closed     *prometheus.CounterVec
	handshake  *prometheus.CounterVec
	apiReqs    *prometheus.CounterVec
	apiLatency *prometheus.HistogramVec
	rtt        prometheus.Histogram
	fanout     prometheus.Histogram
}

// New returns the metrics of a server. Its registry also holds the Go
// runtime's (go_*) and the process's (process_*) standard collectors.
func New(cfg Config) *Metrics {
	if cfg.Snapshot == nil {
		panic("metrics: Config.Snapshot is required")
	}
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.opened = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_connections_opened_total",
		Help: "WebSocket connections accepted (upgraded), by endpoint.",
	}, []string{"endpoint"})
	m.closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_connections_closed_total",
		Help: "WebSocket connections ended, by endpoint and close code (1006 when the connection ended without a close frame; \"other\" for codes outside the standard, wsgate and Centrifugo ranges).",
	}, []string{"endpoint", "code"})
	m.handshake = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_handshake_failures_total",
		Help: "WebSocket handshakes refused, by endpoint and reason: origin, limit, shutting_down, unavailable, bad_request, auth.",
	}, []string{"endpoint", "reason"})
	m.apiReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "wsgate_api_requests_total",
		Help: "Server API requests, by API method (\"unknown\" for other paths) and HTTP status.",
	}, []string{"method", "status"})
	m.apiLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "wsgate_api_request_duration_seconds",
		Help:    "Time to answer a server API request, by API method.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
	}, []string{"method"})
	m.rtt = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wsgate_ping_rtt_seconds",
		Help:    "Round trip of WebSocket pings: each connection's latest, sampled at scrape time.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	m.fanout = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "wsgate_hub_publish_to_write_seconds",
		Help:    "Time from a publication's acceptance by the broker to its hand-over to this node's subscribers (millisecond precision; in a cluster, from the publishing node's clock).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "wsgate_build_info",
		Help: "Always 1; the version label is the server's version.",
	}, []string{"version"})
	build.WithLabelValues(cfg.Version).Set(1)
	m.reg.MustRegister(m.opened, m.closed, m.handshake, m.apiReqs, m.apiLatency, m.rtt, m.fanout, build,
		&collector{snapshot: cfg.Snapshot, rtt: m.rtt},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	for _, ep := range []string{EndpointWS, EndpointHub} {
		m.opened.WithLabelValues(ep)
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
	return m
}

// Handler returns the /metrics handler, in Prometheus' text format (or
// another format the scraper asks for).
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return m.handler
}

// Registry returns the registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ConnOpened counts a connection accepted on endpoint.
func (m *Metrics) ConnOpened(endpoint string) {
	if m != nil {
		m.opened.WithLabelValues(endpoint).Inc()
	}
}

// ConnClosed counts a connection of endpoint that ended with close code
// code (see CodeLabel).
func (m *Metrics) ConnClosed(endpoint string, code int) {
	if m != nil {
		m.closed.WithLabelValues(endpoint, CodeLabel(code)).Inc()
	}
}

// HandshakeFailed counts a handshake on endpoint refused for reason, one
// of the Reason constants.
func (m *Metrics) HandshakeFailed(endpoint, reason string) {
	if m != nil {
		m.handshake.WithLabelValues(endpoint, reason).Inc()
	}
}

// APIRequest counts a server API request for method (one of the API's
// method names, else "unknown") answered with status after d.
func (m *Metrics) APIRequest(method string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.apiReqs.WithLabelValues(method, strconv.Itoa(status)).Inc()
	m.apiLatency.WithLabelValues(method).Observe(d.Seconds())
}

// Fanout records a publication handed to its subscribers d after the
// broker accepted it (hub.Config.OnFanout).
func (m *Metrics) Fanout(_ int, d time.Duration) {
	if m != nil {
		m.fanout.Observe(max(d, 0).Seconds())
	}
}

// CodeLabel returns the code label of a close code: the number for the
// codes of RFC 6455 (1000–1015) and of Centrifugo's disconnects
// (3000–3999), "other" for the rest (codes that applications choose,
// 4000–4999, are unbounded in meaning and kept out of the label set).
func CodeLabel(code int) string {
	switch {
	case code >= 1000 && code <= 1015, code >= 3000 && code <= 3999:
		return strconv.Itoa(code)
	}
	return "other"
}

// collector exports a Snapshot at every scrape.
type collector struct {
	snapshot func(*Snapshot)
	rtt      prometheus.Histogram
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descConns        = desc("wsgate_connections", "Open WebSocket connections, by endpoint.", "endpoint")
	descMsgsIn       = desc("wsgate_messages_received_total", "WebSocket data messages received, by endpoint.", "endpoint")
	descMsgsOut      = desc("wsgate_messages_sent_total", "WebSocket data messages accepted for sending, by endpoint.", "endpoint")
	descBytesIn      = desc("wsgate_received_bytes_total", "Payload bytes of the messages received (after decompression), by endpoint.", "endpoint")
	descBytesOut     = desc("wsgate_sent_bytes_total", "Payload bytes of the messages sent (before compression), by endpoint.", "endpoint")
	descDropped      = desc("wsgate_send_queue_dropped_messages_total", "Messages discarded by a connection's send queue policy, by endpoint.", "endpoint")
	descSlow         = desc("wsgate_slow_consumer_disconnects_total", "Connections closed because their send queue overflowed (1008 on /ws, 3008 on the hub), by endpoint.", "endpoint")
	descHTTPConns    = desc("wsgate_http_connections", "Open HTTP connections that are not WebSockets (page, API, health checks, handshakes in progress).")
	descBudgetUsed   = desc("wsgate_memory_budget_used_bytes", "Bytes the WebSocket connections hold in buffers, charged to the memory budget.")
	descBudgetLimit  = desc("wsgate_memory_budget_limit_bytes", "The memory budget's limit.")
	descBudgetEvict  = desc("wsgate_memory_budget_evictions_total", "Connections closed to keep within the memory budget.")
	descHubClients   = desc("wsgate_hub_clients", "Clients connected to the hub on this node.")
	descHubUsers     = desc("wsgate_hub_users", "Distinct users among the hub's clients (anonymous counts as one).")
	descHubChannels  = desc("wsgate_hub_channels", "Channels with at least one subscriber on this node.")
	descHubSubs      = desc("wsgate_hub_subscriptions", "Subscriptions on this node.")
	descHubPubs      = desc("wsgate_hub_publications_total", "Publications accepted on this node (server API and client publishes).")
	descHubDeliv     = desc("wsgate_hub_deliveries_total", "Publication frames handed to connections.")
	descHubInsuff    = desc("wsgate_hub_insufficient_state_total", "Subscriptions ended (or connections closed) because they lost publications.")
	descEngineConns  = desc("wsgate_engine_connections", "Connections served by wsgate's engine, on every transport (event loops and reader goroutines).")
	descLoops        = desc("wsgate_event_loops", "Running event loops.")
	descMemReleases  = desc("wsgate_engine_memory_releases_total", "Times the engine gave memory back to the system after large-buffer traffic stopped (two collections and FreeOSMemory).")
	descLoopConns    = desc("wsgate_event_loop_connections", "Connections served by each event loop.", "loop")
	descLoopWakeups  = desc("wsgate_event_loop_wakeups_total", "Times each event loop woke up (reset when the loops stop with the last connection).", "loop")
	descLoopEvents   = desc("wsgate_event_loop_events_total", "Socket and task events each event loop handled; per wake-up, the batch size.", "loop")
	descBrokerUp     = desc("wsgate_broker_up", "1 when the broker reports itself healthy (or cannot tell), 0 when not.")
	descBrokerRecv   = desc("wsgate_broker_received_publications_total", "Publications the broker delivered to this node.")
	descBrokerPubErr = desc("wsgate_broker_publish_errors_total", "Failed broker publishes.")
	descBrokerGaps   = desc("wsgate_broker_gaps_total", "Times the broker reported that deliveries may have been lost (for example after reconnecting to its message bus).")
	descBrokerHist   = desc("wsgate_broker_history_publications", "Publications the broker holds in history, all channels (with NATS: messages in the history stream, markers included).")
	descBrokerHistB  = desc("wsgate_broker_history_bytes", "Storage the broker's history takes: payload bytes in memory, the stream's stored bytes with NATS.")
	descBrokerReconn = desc("wsgate_broker_reconnects_total", "Times the broker reconnected to its message bus.")
	descTLSNotAfter  = desc("wsgate_tls_certificate_expiry_timestamp_seconds", "Expiry (NotAfter) of the certificate served, as a Unix time.")
	descTLSReloads   = desc("wsgate_tls_certificate_loads_total", "Certificates loaded, at the start and on reload, by result (ok, error).", "result")
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descConns, descMsgsIn, descMsgsOut, descBytesIn, descBytesOut, descDropped, descSlow,
		descHTTPConns, descBudgetUsed, descBudgetLimit, descBudgetEvict,
		descHubClients, descHubUsers, descHubChannels, descHubSubs, descHubPubs, descHubDeliv, descHubInsuff,
		descEngineConns, descLoops, descMemReleases, descLoopConns, descLoopWakeups, descLoopEvents,
		descBrokerUp, descBrokerRecv, descBrokerPubErr, descBrokerGaps,
		descBrokerHist, descBrokerHistB, descBrokerReconn, descTLSNotAfter, descTLSReloads,
	} {
		ch <- d
	}
}

// Collect takes a snapshot and exports it. The registry may call it from
// concurrent scrapes; the Snapshot function serializes itself.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	var s Snapshot
	c.snapshot(&s)
	for _, d := range s.RTTs {
		c.rtt.Observe(d.Seconds())
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, e := range s.Endpoints {
		gauge(descConns, float64(e.Open), e.Name)
		counter(descMsgsIn, e.MessagesIn, e.Name)
		counter(descMsgsOut, e.MessagesOut, e.Name)
		counter(descBytesIn, e.BytesIn, e.Name)
		counter(descBytesOut, e.BytesOut, e.Name)
		counter(descDropped, e.Dropped, e.Name)
		counter(descSlow, e.SlowDisconnects, e.Name)
	}
	gauge(descHTTPConns, float64(s.HTTPConns))
	if b := s.Budget; b != nil {
		gauge(descBudgetUsed, float64(b.Used))
		gauge(descBudgetLimit, float64(b.Limit))
		counter(descBudgetEvict, b.Evictions)
	}
	if h := s.Hub; h != nil {
		gauge(descHubClients, float64(h.Clients))
		gauge(descHubUsers, float64(h.Users))
		gauge(descHubChannels, float64(h.Channels))
		gauge(descHubSubs, float64(h.Subscriptions))
		counter(descHubPubs, h.Publications)
		counter(descHubDeliv, h.Deliveries)
		counter(descHubInsuff, h.InsufficientState)
	}
	gauge(descEngineConns, float64(s.Engine.Connections))
	gauge(descLoops, float64(len(s.Engine.Loops)))
	counter(descMemReleases, s.Engine.MemoryReleases)
	for i, l := range s.Engine.Loops {
		loop := strconv.Itoa(i)
		gauge(descLoopConns, float64(l.Connections), loop)
		counter(descLoopWakeups, l.Wakeups, loop)
		counter(descLoopEvents, l.Events, loop)
	}
	if b := s.Broker; b != nil {
		up := 0.0
		if b.Up || !b.HealthKnown {
			up = 1
		}
		gauge(descBrokerUp, up)
		counter(descBrokerRecv, b.Received)
		counter(descBrokerPubErr, b.PublishErrors)
		counter(descBrokerGaps, b.Gaps)
		if st := b.Stats; st != nil {
			gauge(descBrokerHist, float64(st.HistoryPublications))
			gauge(descBrokerHistB, float64(st.HistoryBytes))
			counter(descBrokerReconn, st.Reconnects)
		}
	}
	if t := s.TLS; t != nil {
		gauge(descTLSNotAfter, float64(t.NotAfter.Unix()))
		counter(descTLSReloads, t.Reloads, "ok")
		counter(descTLSReloads, t.ReloadErrors, "error")
	}
}
