package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/broker/natsbroker"
	"github.com/wsgate/wsgate/hub"
)

// Defaults of cluster mode that the server fills in itself (the others are
// natsbroker's, documented on natsbroker.Options).
const (
	// DefaultNATSName is the NATS connection's name, natsbroker's default.
	DefaultNATSName = "wsgate"
	// DefaultNATSPrefix starts the broker's subjects and stream names,
	// natsbroker's default.
	DefaultNATSPrefix = "wsgate"
	// DefaultClusterName names the embedded NATS cluster, natsbroker's
	// default.
	DefaultClusterName = "wsgate"
	// defaultPresenceTTL is natsbroker's Options.PresenceTTL default.
	defaultPresenceTTL = time.Minute
	// embeddedShutdownTimeout bounds the embedded NATS server's shutdown,
	// which comes after the hub's and so has a budget of its own.
	embeddedShutdownTimeout = 10 * time.Second
)

// The broker modes, as the startup log names them.
const (
	brokerMemory   = "memory"
	brokerNATS     = "nats"
	brokerEmbedded = "nats-embedded"
)

// ClusterConfig puts the hub on NATS with JetStream (package natsbroker),
// so that several wsgate nodes behind a load balancer share channels,
// history, offsets and presence: a publication sent to any node reaches the
// channel's subscribers on every node, and a client that reconnects to
// another node recovers what it missed. docs/cluster.md tells how to run a
// cluster and what it guarantees.
//
// The zero value is a single node on the in-memory broker.
type ClusterConfig struct {
	// NATS configures the broker. Setting NATS.URLs (comma-separated, such
	// as "nats://n1:4222,nats://n2:4222") runs the hub on those NATS
	// servers. The zero value of each field means natsbroker's default,
	// except:
	//
	//   - Replicas: 3 when the cluster has three NATS servers or more (three
	//     URLs, or an embedded server with routes to two others or more),
	//     else 1;
	//   - Logger: the server's logger;
	//   - InProcess: set by the server in embedded mode, ignored otherwise.
	//
	// Every node of a cluster must use the same Prefix and Replicas.
	NATS natsbroker.Options

	// Embedded, when set, starts a NATS server with JetStream inside this
	// process (natsbroker.StartEmbedded) when the server starts, and runs
	// the broker on it without a socket. Give each node a ClusterAddr and
	// the nodes' Routes, and three wsgate processes form a cluster with
	// nothing else installed; without a ClusterAddr it is a standalone
	// server that keeps history on disk (StoreDir). NATS.URLs and the
	// connection's credentials (CredentialsFile, Token, User, Password,
	// TLS) must be empty then. The server shuts the NATS server down after
	// the hub. Embedded.Logger defaults to the server's logger, with the
	// NATS server's notices at debug level.
	Embedded *natsbroker.EmbeddedOptions
}

// mode returns the broker mode c selects.
func (c ClusterConfig) mode() string {
	switch {
	case c.Embedded != nil:
		return brokerEmbedded
	case strings.TrimSpace(c.NATS.URLs) != "":
		return brokerNATS
	}
	return brokerMemory
}

// withDefaults returns c with the server's defaults filled in, and a
// *FieldError per invalid field. The caller's EmbeddedOptions are copied,
// never modified.
func (c ClusterConfig) withDefaults(hasBroker bool) (ClusterConfig, []error) {
	var errs []error
	bad := func(field string, value any, reason string) {
		errs = append(errs, &FieldError{Field: "Cluster." + field, Value: value, Reason: reason})
	}
	mode := c.mode()
	if mode == brokerMemory {
		return c, nil
	}
	if hasBroker {
		bad("NATS", mode, "Broker is set too: set either Broker or Cluster")
	}
	n := &c.NATS
	if n.Name == "" {
		n.Name = DefaultNATSName
	}
	if n.Prefix == "" {
		n.Prefix = DefaultNATSPrefix
	}
	if strings.IndexFunc(n.Prefix, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_')
	}) >= 0 {
		bad("NATS.Prefix", n.Prefix, "only letters, digits, '-' and '_' (one NATS subject token)")
	}
	servers := 0
	if mode == brokerNATS {
		for _, u := range splitList(n.URLs) {
			if err := checkNATSURL(u); err != nil {
				bad("NATS.URLs", redactURL(u), err.Error())
			}
			servers++
		}
	} else {
		e := *c.Embedded
		c.Embedded = &e
		if n.URLs != "" {
			bad("NATS.URLs", RedactURLs(n.URLs), "an embedded NATS server is used: leave the URLs empty")
		}
		for _, f := range []struct {
			field string
			set   bool
		}{
			{"CredentialsFile", n.CredentialsFile != ""}, {"Token", n.Token != ""}, {"User", n.User != ""}, {"Password", n.Password != ""},
			{"TLS", n.TLSConfig != nil || n.TLSCAFile != "" || n.TLSCertFile != "" || n.TLSKeyFile != ""},
		} {
			if f.set {
				bad("NATS."+f.field, "(set)", "the broker connects to the embedded NATS server in process, without credentials or TLS: leave it empty")
			}
		}
		if e.ClusterName == "" {
			e.ClusterName = DefaultClusterName
		}
		for _, a := range []struct{ field, addr string }{{"ClusterAddr", e.ClusterAddr}, {"ClusterAdvertise", e.ClusterAdvertise}, {"ClientAddr", e.ClientAddr}} {
			if a.addr == "" {
				continue
			}
			if _, _, err := net.SplitHostPort(a.addr); err != nil {
				bad("Embedded."+a.field, a.addr, "want host:port, e.g. 127.0.0.1:6222")
			}
		}
		switch {
		case e.ClusterAddr != "" && len(e.Routes) == 0:
			bad("Embedded.Routes", "[]", "a clustered server (ClusterAddr set) needs the routes to the other nodes")
		case e.ClusterAddr == "" && len(e.Routes) > 0:
			bad("Embedded.ClusterAddr", "", "routes need a cluster address for this node to accept the others' routes")
		}
		for _, r := range e.Routes {
			if err := checkRoute(r); err != nil {
				bad("Embedded.Routes", redactURL(r), err.Error())
			}
		}
		servers = clusterSize(e)
	}
	if n.Replicas == 0 {
		n.Replicas = 1
		if servers >= 3 {
			n.Replicas = 3
		}
	}
	if n.Replicas < 1 || n.Replicas > 5 {
		bad("NATS.Replicas", n.Replicas, "must be between 1 and 5 (JetStream's limit)")
	} else if servers > 0 && n.Replicas > servers && mode == brokerEmbedded {
		bad("NATS.Replicas", n.Replicas, fmt.Sprintf("more than the %d NATS servers of the embedded cluster", servers))
	}
	return c, errs
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// checkNATSURL checks one NATS server URL as nats.go takes it: a URL with
// a scheme nats, tls, ws or wss, or a bare host:port.
func checkNATSURL(s string) error {
	if !strings.Contains(s, "://") {
		s = "nats://" + s
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("not a URL: want nats://host:port")
	case u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss":
		return fmt.Errorf("scheme %q: want nats, tls, ws or wss", u.Scheme)
	case u.Hostname() == "":
		return errors.New("no host: want nats://host:port")
	}
	return nil
}

// checkRoute checks a route as natsbroker takes it: host:port or
// nats-route://host:port.
func checkRoute(s string) error {
	if !strings.Contains(s, "://") {
		s = "nats-route://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Port() == "" {
		return errors.New("want host:port or nats-route://host:port")
	}
	return nil
}

// clusterSize counts the NATS servers of an embedded cluster: the distinct
// routes, plus this node when its own address is not among them.
func clusterSize(e natsbroker.EmbeddedOptions) int {
	if e.ClusterAddr == "" {
		return 1
	}
	hostPort := func(s string) string {
		if _, rest, ok := strings.Cut(s, "://"); ok {
			s = rest
		}
		if _, rest, ok := strings.Cut(s, "@"); ok {
			s = rest
		}
		return strings.TrimSuffix(strings.ToLower(s), "/")
	}
	seen := make(map[string]bool)
	for _, r := range e.Routes {
		seen[hostPort(r)] = true
	}
	n := len(seen)
	if !seen[hostPort(e.ClusterAddr)] && (e.ClusterAdvertise == "" || !seen[hostPort(e.ClusterAdvertise)]) {
		n++
	}
	return n
}

// redactURL hides the password of a URL with credentials.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		return u.Redacted()
	}
	if strings.Contains(s, "@") {
		// Not a URL we could parse, with what may be credentials in it.
		_, host, _ := strings.Cut(s, "@")
		return "xxxxx@" + host
	}
	return s
}

// RedactURLs returns a comma-separated list of URLs with the password of
// every URL that has one replaced by "xxxxx", for logs and printed
// configurations.
func RedactURLs(s string) string {
	parts := splitList(s)
	for i, p := range parts {
		parts[i] = redactURL(p)
	}
	return strings.Join(parts, ",")
}

// embeddedNATS is the NATS server that Serve starts in embedded mode. The
// broker, made by New, connects to it through InProcessConn once it runs.
type embeddedNATS struct {
	opts natsbroker.EmbeddedOptions
	mu   sync.Mutex
	srv  *natsbroker.Embedded // nil until started, and after Shutdown
}

// InProcessConn connects the broker to the running server
// (nats.InProcessConnProvider).
func (n *embeddedNATS) InProcessConn() (net.Conn, error) {
	n.mu.Lock()
	srv := n.srv
	n.mu.Unlock()
	if srv == nil {
		return nil, errors.New("server: the embedded NATS server is not running")
	}
	return srv.InProcessConn()
}

// newBroker returns the broker cfg (already with defaults) asks for: its
// Broker, a natsbroker.Broker in cluster mode, else a broker.Memory. In
// embedded mode it also prepares the NATS server that startEmbedded starts.
func (s *Server) newBroker() (broker.Broker, error) {
	c := s.cfg.Cluster
	switch c.mode() {
	case brokerMemory:
		if s.cfg.Broker != nil {
			return s.cfg.Broker, nil
		}
		return broker.NewMemory(broker.MemoryConfig{}), nil
	case brokerEmbedded:
		opts := *c.Embedded
		if opts.Logger == nil {
			opts.Logger = slog.New(debugNotices{s.log.Handler()})
		}
		s.nats = &embeddedNATS{opts: opts}
		c.NATS.InProcess = s.nats
	default:
		c.NATS.InProcess = nil
	}
	if c.NATS.Logger == nil {
		c.NATS.Logger = s.log
	}
	b, err := natsbroker.New(c.NATS)
	if err != nil {
		return nil, fmt.Errorf("server: broker: %w", err)
	}
	return b, nil
}

// startEmbedded starts the embedded NATS server, if there is one; ctx
// bounds the start.
func (s *Server) startEmbedded(ctx context.Context) error {
	if s.nats == nil {
		return nil
	}
	srv, err := natsbroker.StartEmbedded(ctx, s.nats.opts)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.nats.mu.Lock()
	s.nats.srv = srv
	s.nats.mu.Unlock()
	s.log.Info("embedded NATS server started", "name", srv.Name(), "cluster_addr", srv.ClusterAddr(), "client_url", srv.ClientURL())
	return nil
}

// stopEmbedded shuts the embedded NATS server down, if it runs: after the
// hub, whose broker is its client. Calling it again does nothing.
func (s *Server) stopEmbedded() {
	if s.nats == nil {
		return
	}
	s.nats.mu.Lock()
	srv := s.nats.srv
	s.nats.srv = nil
	s.nats.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), embeddedShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		s.log.Error("embedded NATS server shutdown", "err", err)
		return
	}
	s.log.Info("embedded NATS server stopped", "name", srv.Name())
}

// clusterHubConfig adapts the hub's configuration to the broker: presence
// entries are refreshed well within the broker's presence TTL, and in
// embedded mode the hub is named after its NATS server.
func (s *Server) clusterHubConfig(hc *hub.Config) {
	c := s.cfg.Cluster
	if c.mode() == brokerMemory {
		return
	}
	ttl := c.NATS.PresenceTTL
	if ttl == 0 {
		ttl = defaultPresenceTTL
	}
	// Three refreshes per TTL: an entry survives one or two that fail (a
	// reconnection, a leader election).
	hc.PresenceUpdateInterval = min(hub.DefaultPresenceUpdateInterval, ttl/3)
	if s.nats != nil {
		s.nats.mu.Lock()
		if s.nats.srv != nil {
			hc.Name = s.nats.srv.Name()
		}
		s.nats.mu.Unlock()
	}
}

// logBroker writes the broker's settings at startup: its mode and where it
// connects, never a secret (URLs lose their passwords; credentials are
// named by kind only).
func (s *Server) logBroker() {
	c := s.cfg.Cluster
	mode := c.mode()
	if mode == brokerMemory {
		kind := "memory"
		if s.cfg.Broker != nil {
			kind = fmt.Sprintf("%T", s.cfg.Broker)
		}
		s.log.Info("broker", "mode", kind)
		return
	}
	n := c.NATS
	attrs := []any{"mode", mode, "connection_name", n.Name, "prefix", n.Prefix, "replicas", n.Replicas}
	if mode == brokerNATS {
		var auth []string
		if n.CredentialsFile != "" {
			auth = append(auth, "credentials_file")
		}
		if n.Token != "" {
			auth = append(auth, "token")
		}
		if n.User != "" || n.Password != "" {
			auth = append(auth, "user_password")
		}
		if strings.Contains(n.URLs, "@") {
			auth = append(auth, "url")
		}
		tls := n.TLSConfig != nil || n.TLSCAFile != "" || n.TLSCertFile != ""
		attrs = append(attrs, "urls", RedactURLs(n.URLs), "auth", auth, "tls", tls)
	} else {
		e := s.nats.opts
		s.nats.mu.Lock()
		if s.nats.srv != nil {
			e.Name = s.nats.srv.Name()
		}
		s.nats.mu.Unlock()
		if e.StoreDir == "" && e.Name != "" {
			e.StoreDir = filepath.Join(os.TempDir(), "wsgate-nats", e.Name)
		}
		routes := make([]string, len(e.Routes))
		for i, r := range e.Routes {
			routes[i] = redactURL(r)
		}
		attrs = append(attrs,
			slog.Group("embedded",
				"name", e.Name,
				"cluster_name", e.ClusterName,
				"cluster_addr", e.ClusterAddr,
				"cluster_advertise", e.ClusterAdvertise,
				"routes", routes,
				"cluster_auth", e.ClusterUser != "" || e.ClusterPassword != "",
				"client_addr", e.ClientAddr,
				"store_dir", e.StoreDir,
				"sync_always", e.SyncAlways,
			))
	}
	s.log.Info("broker", attrs...)
}

// debugNotices is a slog.Handler that writes the embedded NATS server's
// info lines (its notices: a banner, routes, leader elections) at debug
// level, so that -log-level debug shows them and the default level keeps
// only its warnings and errors.
type debugNotices struct{ h slog.Handler }

func (d debugNotices) Enabled(ctx context.Context, l slog.Level) bool {
	if l == slog.LevelInfo {
		l = slog.LevelDebug
	}
	return d.h.Enabled(ctx, l)
}

func (d debugNotices) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	return d.h.Handle(ctx, r)
}

func (d debugNotices) WithAttrs(attrs []slog.Attr) slog.Handler {
	return debugNotices{d.h.WithAttrs(attrs)}
}

func (d debugNotices) WithGroup(name string) slog.Handler { return debugNotices{d.h.WithGroup(name)} }
