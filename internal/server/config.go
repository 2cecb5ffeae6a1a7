package server

import (
	"errors"
	"fmt"
	"net"
	"path"
	"strings"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/hub"
)

// Defaults for the zero values of Config. Why each HTTP limit has its
// value is told in docs/server.md ("HTTP limits").
const (
	DefaultAddr             = "0.0.0.0:5555"
	DefaultHeartbeat        = time.Second
	DefaultMaxConns         = 10000
	DefaultMaxMessageSize   = 64 << 10
	DefaultMemoryBudget     = 4 << 30
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultShutdownTimeout  = 10 * time.Second
	DefaultReadTimeout      = 15 * time.Second
	DefaultWriteTimeout     = 15 * time.Second
	DefaultIdleTimeout      = 60 * time.Second
	DefaultMaxHeaderBytes   = 32 << 10
	DefaultMaxHTTPConns     = 1024
)

// MaxMaxHeaderBytes is the largest MaxHeaderBytes a Config may set: 64 KiB.
// Larger headers cost memory on every connection that sends them and no
// browser needs them.
const MaxMaxHeaderBytes = 64 << 10

// HeartbeatMessage is the text message the server sends on every connection
// once per Config.Heartbeat.
const HeartbeatMessage = "heartbeat"

// Config configures a Server. The zero value of every field means the
// documented default, so Config{} is a working server on 0.0.0.0:5555.
type Config struct {
	// Addr is the TCP address Run listens on. Defaults to DefaultAddr
	// ("0.0.0.0:5555"). Serve ignores it and uses its listener.
	Addr string

	// Version is reported in the startup log line. Defaults to "dev".
	Version string

	// Heartbeat is how often the text message "heartbeat" is sent on every
	// WebSocket connection. Defaults to 1s; negative disables heartbeats.
	// It is an application message, as in the tutorial; dead peers are
	// detected by the protocol pings (PingInterval), not by it.
	Heartbeat time.Duration

	// AllowOrigins lists host patterns (path.Match syntax, for example
	// "*.example.com" or "localhost:*") whose pages may open a WebSocket
	// besides same-origin pages. The single pattern "*" allows every
	// origin, which is only safe when the endpoint trusts no cookie or
	// other ambient credential; the server logs a warning for it.
	AllowOrigins []string

	// MaxConns bounds the WebSocket connections open at once; beyond it
	// /ws answers 503 before upgrading. Defaults to 10000; negative means
	// no limit.
	MaxConns int

	// MaxMessageSize is the largest message, in bytes, a client may send.
	// A larger one closes its connection with 1009 (message too big).
	// Defaults to 64 KiB, as Centrifugo's. It also sizes each connection's
	// send queue: room for one echo of the largest message plus 64 KiB
	// (heartbeats, control frames); a client that reads slower than that is
	// closed with 1008. With the defaults one connection holds at most
	// about 400 KiB, so 10,000 of them at their worst fit DefaultMemoryBudget
	// (docs/security.md has the arithmetic).
	MaxMessageSize int64

	// MemoryBudget bounds the bytes all WebSocket connections together
	// hold in buffers (messages being reassembled or inflated, send
	// queues). Over it, the connections holding the most are closed (1009
	// or 1008) until the rest are under 90% of it; past half of it, new
	// connections are not offered compression. Defaults to 4 GiB; negative
	// means no budget.
	MemoryBudget int64

	// HandshakeTimeout bounds reading a request's headers, and so the
	// opening handshake. Defaults to 10s.
	HandshakeTimeout time.Duration

	// ShutdownTimeout bounds the graceful shutdown that Run and Serve
	// start when their context is cancelled. Defaults to 10s.
	ShutdownTimeout time.Duration

	// PingInterval and PingTimeout set the protocol keepalive of every
	// connection (see wsgate.Options). Zero means the wsgate defaults (20s
	// and 10s); a negative PingInterval disables keepalive.
	PingInterval time.Duration
	PingTimeout  time.Duration

	// Compression enables permessage-deflate on /ws for clients that offer
	// it.
	Compression bool

	// EventLoops is how many event loops serve the WebSocket connections
	// (wsgate.SetEventLoops, a setting of the whole process). Zero means
	// one per GOMAXPROCS; more than the cores only adds wake-ups, fewer
	// leaves cores to the rest of the process.
	EventLoops int

	// MemoryRelease is how long traffic with large messages must have
	// stopped before the engine gives the memory it left behind back to the
	// system (wsgate.SetMemoryRelease, a setting of the whole process).
	// Zero means wsgate.DefaultMemoryQuiet (2s); negative disables it.
	MemoryRelease time.Duration

	// AllowedHosts lists the Host header values the server answers, on
	// every route; a request for another host gets 421 (misdirected
	// request). A pattern is a host name in path.Match syntax
	// ("*.example.com"), an IP address ("127.0.0.1", "[::1]"), or either
	// with a port ("app.example.com:8443", "[::1]:5555"); without a port it
	// matches any port. Matching ignores case and a trailing dot. "*"
	// allows every host.
	//
	// Empty means a default that depends on the listen address (Addr for
	// Run, the listener's address for Serve): on a loopback address
	// (127.0.0.0/8, ::1, localhost) only localhost, 127.0.0.1 and [::1] on
	// any port, which defends a local server against DNS rebinding; on any
	// other address every host, which does not. See docs/server.md.
	AllowedHosts []string

	// ReadTimeout bounds reading a whole request, headers and body, from
	// its first byte; a client that sends slower is disconnected. Defaults
	// to 15s, or HandshakeTimeout if that is longer. It may not be shorter
	// than HandshakeTimeout.
	ReadTimeout time.Duration

	// WriteTimeout bounds a non-WebSocket request from the end of its
	// headers to the end of its response; a client that does not read the
	// answer is disconnected. Upgrade lifts it from WebSocket connections.
	// Defaults to 15s.
	WriteTimeout time.Duration

	// IdleTimeout is how long an HTTP keep-alive connection may wait for
	// its next request. Defaults to 60s.
	IdleTimeout time.Duration

	// MaxHeaderBytes bounds the size of a request's headers (net/http adds
	// 4 KiB of slack); larger headers get 431. Defaults to 32 KiB, at most
	// MaxMaxHeaderBytes (64 KiB).
	MaxHeaderBytes int

	// MaxHTTPConns bounds the HTTP connections open at once that are not
	// (yet) WebSocket connections: page and health requests, keep-alive
	// connections and handshakes in progress. A connection leaves this
	// count when it is upgraded; from then on MaxConns counts it. When the
	// limit is reached an idle keep-alive connection is closed to make
	// room; when none is idle the new connection gets a minimal 503 and is
	// closed at once. It applies to Serve and Run, not to Handler mounted
	// elsewhere. Defaults to 1024; negative means no limit.
	MaxHTTPConns int

	// The hub: /connection/websocket (Centrifugo's client protocol) and
	// the server API (/api/...). Its connections share MaxConns, the
	// memory budget, MaxMessageSize, the origin policy, Compression and
	// the keepalive (PingInterval and PingTimeout, as the protocol's own
	// pings) with /ws.

	// AllowAnonymous lets clients connect to /connection/websocket without
	// a token, with an empty user ID (Centrifugo's
	// client.allow_anonymous_connect_without_token). Off by default: then
	// only clients with a valid connection token connect.
	AllowAnonymous bool

	// Tokens holds the keys that verify connection and subscription tokens
	// (JWT): HS256/384/512 with HMACSecret, RS256/384/512 with
	// RSAPublicKey, ES256/384/512 with ECDSAPublicKey, and the aud and iss
	// claims tokens must carry when Audience and Issuer are set. Without
	// any key every token is refused (3500 invalid token), so only
	// anonymous clients can connect. HMACSecret is a secret: it never
	// appears in logs.
	Tokens auth.Config

	// Channels holds the channel options. Nil means
	// DefaultChannels(ChannelDefaults{}, AllowAnonymous): clients may
	// subscribe to channels without a namespace, and history, presence,
	// join/leave events and client publishing are off. A channel whose
	// namespace Channels does not list is unknown (error 102).
	Channels *hub.ChannelConfig

	// APIKey is the server API's key, which requests carry in X-API-Key
	// or "Authorization: apikey KEY". Empty, the API answers every
	// request with 401, as Centrifugo does. A secret: it never appears in
	// logs.
	APIKey string

	// APIAddr, when set, serves the server API on its own listener at
	// this TCP address (host:port) at /api/, and not on Addr. Empty, the
	// API is served at /api/ on Addr.
	APIAddr string

	// Operations: metrics, the admin address and page, profiling, TLS
	// (docs/operations.md).

	// DisableMetrics turns /metrics off. Metrics are on by default: they
	// are read at scrape time, so they cost nothing per message. /metrics
	// is served on AdminAddr when it is set, else on Addr.
	DisableMetrics bool

	// AdminAddr, when set, is a TCP address (host:port) of a second
	// listener for operators: /metrics, /admin (with Admin), /debug/pprof/
	// (with Pprof), /healthz and /readyz. Without a host (":9090") it
	// listens on 127.0.0.1 only. Empty: no admin listener.
	AdminAddr string

	// Admin serves the admin dashboard at /admin/ on AdminAddr, behind
	// AdminPassword. Off by default; it needs both.
	Admin bool

	// AdminPassword protects /admin: browsers ask for it (HTTP Basic
	// authentication, any user name), scripts may send "Authorization:
	// Bearer PASSWORD". At least MinAdminPasswordLen characters. A secret:
	// it never appears in logs.
	AdminPassword string

	// Pprof serves Go's profiler at /debug/pprof/ on AdminAddr (and never
	// on Addr). Off by default.
	Pprof bool

	// TLSCertFile and TLSKeyFile, set together, serve every listener
	// (Addr, APIAddr, AdminAddr) over TLS: wss:// and https://, TLS 1.2 or
	// later. The files are PEM (the certificate file may hold the chain);
	// they are read again on ReloadTLS (SIGHUP in Run) and when they
	// change, without touching established connections.
	TLSCertFile string
	TLSKeyFile  string

	// Broker carries publications between the hub and, in a cluster, the
	// other nodes, and keeps channel history. Defaults to a broker.Memory
	// (one node). When it implements broker.HealthChecker, /readyz
	// reports its health. Serve runs it and the hub's Shutdown closes it,
	// so a Broker serves one Server. Cluster mode (Cluster) makes one.
	Broker broker.Broker

	// Cluster runs the hub on NATS, so that several nodes share channels,
	// history and presence (see ClusterConfig). The zero value is a single
	// node on the in-memory broker (or Broker).
	Cluster ClusterConfig
}

// ChannelDefaults are the quick-start settings of channels without a
// namespace, as the flags -history-size, -history-ttl, -presence,
// -join-leave and -allow-publish give them. DefaultChannels turns them
// into channel options.
type ChannelDefaults struct {
	HistorySize  int           // publications kept per channel; 0: no history
	HistoryTTL   time.Duration // how long each is kept; 0: no history
	Presence     bool          // who is subscribed, and how many
	JoinLeave    bool          // join and leave pushes
	AllowPublish bool          // subscribers may publish
}

// DefaultChannelOptions returns the options of channels without a
// namespace that d stands for, on a server that allows anonymous clients
// or not. Each quick-start setting turns on what makes it usable by a
// subscriber, where Centrifugo would need a second setting:
//
//   - always: AllowSubscribeForClient, and AllowSubscribeForAnonymous with
//     allowAnonymous;
//   - history (HistorySize and HistoryTTL both set): ForceRecovery and
//     ForcePositioning (a client that comes back gets what it missed, a
//     lost publication is detected) and AllowHistoryForSubscriber;
//   - Presence: AllowPresenceForSubscriber;
//   - JoinLeave: ForcePushJoinLeave (every subscriber gets the pushes,
//     without asking);
//   - AllowPublish: AllowPublishForSubscriber;
//
// and the ...ForAnonymous twin of each "for subscriber" permission when
// allowAnonymous is set.
func DefaultChannelOptions(d ChannelDefaults, allowAnonymous bool) hub.ChannelOptions {
	history := d.HistorySize > 0 && d.HistoryTTL > 0
	return hub.ChannelOptions{
		AllowSubscribeForClient:    true,
		AllowSubscribeForAnonymous: allowAnonymous,

		HistorySize:               d.HistorySize,
		HistoryTTL:                d.HistoryTTL,
		ForceRecovery:             history,
		ForcePositioning:          history,
		AllowHistoryForSubscriber: history,
		AllowHistoryForAnonymous:  history && allowAnonymous,

		Presence:                   d.Presence,
		AllowPresenceForSubscriber: d.Presence,
		AllowPresenceForAnonymous:  d.Presence && allowAnonymous,

		JoinLeave:          d.JoinLeave,
		ForcePushJoinLeave: d.JoinLeave,

		AllowPublishForSubscriber: d.AllowPublish,
		AllowPublishForAnonymous:  d.AllowPublish && allowAnonymous,
	}
}

// DefaultChannels returns the channel configuration with only channels
// without a namespace, whose options are DefaultChannelOptions(d,
// allowAnonymous).
func DefaultChannels(d ChannelDefaults, allowAnonymous bool) *hub.ChannelConfig {
	return &hub.ChannelConfig{Default: DefaultChannelOptions(d, allowAnonymous)}
}

// A FieldError reports an invalid Config field. Config validation returns
// one per invalid field, joined with errors.Join.
type FieldError struct {
	Field  string // the Config field, e.g. "ReadTimeout"
	Value  any    // its value
	Reason string // what is wrong, e.g. "must be positive"
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%s %v: %s", e.Field, e.Value, e.Reason)
}

// FieldErrors returns every *FieldError in err's tree, in order.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}

// withDefaults returns a copy of c with every zero value replaced by its
// default, or an error that joins a *FieldError per invalid field.
// AllowedHosts stays empty when unset: its default depends on the address
// served, see hostPolicyFor.
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	if c.MemoryRelease == 0 {
		c.MemoryRelease = wsgate.DefaultMemoryQuiet
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.MemoryBudget == 0 {
		c.MemoryBudget = DefaultMemoryBudget
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.PingInterval == 0 {
		c.PingInterval = wsgate.DefaultPingInterval
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = wsgate.DefaultPingTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = max(DefaultReadTimeout, c.HandshakeTimeout)
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.MaxHTTPConns == 0 {
		c.MaxHTTPConns = DefaultMaxHTTPConns
	}
	if c.Channels == nil {
		c.Channels = DefaultChannels(ChannelDefaults{}, c.AllowAnonymous)
	}
	if host, port, err := net.SplitHostPort(c.AdminAddr); err == nil && host == "" {
		c.AdminAddr = net.JoinHostPort("127.0.0.1", port) // loopback unless told otherwise
	}
	var errs []error
	bad := func(field string, value any, reason string) {
		errs = append(errs, &FieldError{Field: field, Value: value, Reason: reason})
	}
	if c.MaxMessageSize < 0 {
		bad("MaxMessageSize", c.MaxMessageSize, "must be positive")
	}
	for _, d := range []struct {
		field string
		value time.Duration
	}{
		{"HandshakeTimeout", c.HandshakeTimeout},
		{"ShutdownTimeout", c.ShutdownTimeout},
		{"PingTimeout", c.PingTimeout},
		{"ReadTimeout", c.ReadTimeout},
		{"WriteTimeout", c.WriteTimeout},
		{"IdleTimeout", c.IdleTimeout},
	} {
		if d.value < 0 {
			bad(d.field, d.value, "must be positive")
		}
	}
	if c.ReadTimeout > 0 && c.ReadTimeout < c.HandshakeTimeout {
		bad("ReadTimeout", c.ReadTimeout, fmt.Sprintf(
			"must not be shorter than the handshake timeout (%v): it bounds the whole request, headers included", c.HandshakeTimeout))
	}
	switch {
	case c.MaxHeaderBytes < 0:
		bad("MaxHeaderBytes", c.MaxHeaderBytes, "must be positive")
	case c.MaxHeaderBytes > MaxMaxHeaderBytes:
		bad("MaxHeaderBytes", c.MaxHeaderBytes, fmt.Sprintf("must be at most %d (64 KiB)", MaxMaxHeaderBytes))
	}
	origins := make([]string, 0, len(c.AllowOrigins))
	for _, p := range c.AllowOrigins {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, err := path.Match(p, ""); err != nil {
			bad("AllowOrigins", p, "not a valid path.Match pattern")
		} else if strings.Contains(p, "://") {
			bad("AllowOrigins", p, `an origin pattern is a host pattern without a scheme, e.g. "app.example.com" or "*.example.com"`)
		}
		origins = append(origins, p)
	}
	c.AllowOrigins = origins
	hosts := make([]string, 0, len(c.AllowedHosts))
	for _, p := range c.AllowedHosts {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if _, err := parseHostPattern(p); err != nil {
			bad("AllowedHosts", p, err.Error())
		}
		hosts = append(hosts, p)
	}
	c.AllowedHosts = hosts
	if c.EventLoops < 0 {
		bad("EventLoops", c.EventLoops, "must be 0 (one per GOMAXPROCS) or more")
	}
	if c.APIAddr != "" {
		if _, _, err := net.SplitHostPort(c.APIAddr); err != nil {
			bad("APIAddr", c.APIAddr, "want host:port, e.g. 127.0.0.1:8000")
		} else if c.APIAddr == c.Addr {
			bad("APIAddr", c.APIAddr, "is the main address; leave it empty to serve the API there")
		}
	}
	errs = append(errs, c.validateOps()...)
	errs = append(errs, validateChannels(c.Channels)...)
	var clusterErrs []error
	c.Cluster, clusterErrs = c.Cluster.withDefaults(c.Broker != nil)
	errs = append(errs, clusterErrs...)
	if err := errors.Join(errs...); err != nil {
		return c, fmt.Errorf("server: invalid config: %w", err)
	}
	return c, nil
}

// Effective returns the configuration a Server made with c runs with on
// c.Addr: every zero value replaced by its default and AllowedHosts
// resolved for c.Addr (["*"] when every host is allowed). It returns an
// error joining a *FieldError per invalid field.
func (c Config) Effective() (Config, error) {
	c, err := c.withDefaults()
	if err != nil {
		return c, err
	}
	c.AllowedHosts = hostPolicyFor(c.AllowedHosts, c.Addr).patterns()
	return c, nil
}

// allowAllOrigins reports whether the origin allowlist is the wildcard.
func (c Config) allowAllOrigins() bool {
	for _, p := range c.AllowOrigins {
		if p == "*" {
			return true
		}
	}
	return false
}

// sendQueueBytes is each connection's send queue bound.
func (c Config) sendQueueBytes() int64 { return c.MaxMessageSize + 64<<10 }

// wsOptions returns the wsgate options shared by every connection.
func (c Config) wsOptions() wsgate.Options {
	o := wsgate.Options{
		OriginPatterns:          c.AllowOrigins,
		InsecureSkipOriginCheck: c.allowAllOrigins(),
		Compression:             c.Compression,
		ReadLimit:               c.MaxMessageSize,
		PingInterval:            c.PingInterval,
		PingTimeout:             c.PingTimeout,
		HandshakeTimeout:        c.HandshakeTimeout,
		// Room for an echo of the largest message and the heartbeats
		// around it; a client that reads slower than that is closed with
		// 1008 (the default PolicyClose).
		SendQueueBytes: int(c.sendQueueBytes()),
	}
	if o.PingInterval < 0 {
		o.PingInterval = -1
	}
	return o
}
