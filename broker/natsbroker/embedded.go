package natsbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions configure a NATS server with JetStream that runs inside
// the wsgate process. The zero value is a standalone server that listens on
// no port: only the process's own Broker connects to it, in process. Give
// each node a ClusterAddr and the others' addresses as Routes, and three
// wsgate processes form a NATS cluster with nothing else installed.
type EmbeddedOptions struct {
	// Name identifies the server in its cluster: unique per node and the
	// same across restarts (JetStream keeps its identity under it).
	// Defaults to "wsgate", or "wsgate-" + ClusterAddr's host and port
	// when clustered.
	Name string
	// StoreDir is where JetStream keeps streams; history survives restarts
	// only if it does. Defaults to <os.TempDir()>/wsgate-nats/<Name>.
	StoreDir string
	// ClientAddr, when set (host:port), also accepts NATS clients there —
	// tools such as the nats CLI, or wsgate nodes without their own
	// embedded server. Empty: no client port for a standalone server; a
	// clustered one listens on a free port of 127.0.0.1, which the NATS
	// server needs before it routes, and does not advertise it.
	ClientAddr string

	// ClusterName names the cluster; every node must use the same.
	// Defaults to "wsgate".
	ClusterName string
	// ClusterAddr (host:port) is where this server accepts routes from the
	// other nodes. Empty: a standalone server.
	ClusterAddr string
	// ClusterAdvertise is the host:port the other nodes should dial to
	// reach this one, when ClusterAddr is a wildcard such as 0.0.0.0:6222.
	ClusterAdvertise string
	// Routes are the other nodes' cluster addresses, as host:port or
	// nats-route://host:port. Listing this node's own address too is
	// harmless, so every node can be given the same list.
	Routes []string
	// ClusterUser and ClusterPassword, when set, are required from (and
	// sent to) the other nodes' routes.
	ClusterUser, ClusterPassword string
	// ClusterTLS, when set, secures routes.
	ClusterTLS *tls.Config

	// SyncAlways makes JetStream sync every write to disk before
	// acknowledging it, so that a power loss of a single server loses no
	// acknowledged publication (with Replicas 3, a majority of servers
	// holds each one anyway). Slower. By default the files are synced
	// every two minutes and the OS page cache protects writes from process
	// crashes.
	SyncAlways bool

	// MaxMemory and MaxStore bound JetStream's memory and disk use in
	// bytes. Zero leaves the server's defaults (three quarters of the
	// machine's memory and of the free disk space).
	MaxMemory, MaxStore int64

	// Logger receives the server's log lines (notices as Info). Nil drops
	// them.
	Logger *slog.Logger
}

// Embedded is a running in-process NATS server. Its InProcessConn method
// makes it an Options.InProcess for a Broker.
type Embedded struct {
	srv          *server.Server
	name         string
	shutdownOnce sync.Once
}

// StartEmbedded starts a NATS server and returns once it accepts
// connections, or when ctx is done first. JetStream of a cluster becomes
// usable once a majority of its nodes are up; a Broker's Run waits for it.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (*Embedded, error) {
	so, err := opts.serverOptions()
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(so)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: embedded NATS: %w", err)
	}
	if opts.Logger != nil {
		srv.SetLoggerV2(slogLogger{opts.Logger}, false, false, false)
	}
	srv.Start()
	e := &Embedded{srv: srv, name: so.ServerName}
	if !srv.JetStreamEnabled() {
		e.shutdown()
		return nil, errors.New("natsbroker: embedded NATS: JetStream did not start (see the server's log)")
	}
	for !srv.ReadyForConnections(50 * time.Millisecond) {
		if err := ctx.Err(); err != nil {
			e.shutdown()
			return nil, fmt.Errorf("natsbroker: embedded NATS did not start: %w", err)
		}
		if !srv.Running() {
			e.shutdown()
			return nil, errors.New("natsbroker: embedded NATS stopped while starting (see its log)")
		}
	}
	return e, nil
}

func (o EmbeddedOptions) serverOptions() (*server.Options, error) {
	so := &server.Options{
		ServerName:         o.Name,
		JetStream:          true,
		StoreDir:           o.StoreDir,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		SyncAlways:         o.SyncAlways,
		NoSigs:             true,
		NoLog:              o.Logger == nil,
		DontListen:         o.ClientAddr == "",
	}
	if o.ClientAddr != "" {
		host, port, err := splitHostPort("ClientAddr", o.ClientAddr)
		if err != nil {
			return nil, err
		}
		so.Host, so.Port = host, port
	}
	if o.ClusterAddr != "" {
		host, port, err := splitHostPort("ClusterAddr", o.ClusterAddr)
		if err != nil {
			return nil, err
		}
		so.Cluster = server.ClusterOpts{
			Name:      o.ClusterName,
			Host:      host,
			Port:      port,
			Advertise: o.ClusterAdvertise,
			Username:  o.ClusterUser,
			Password:  o.ClusterPassword,
			TLSConfig: o.ClusterTLS,
		}
		if so.Cluster.Name == "" {
			so.Cluster.Name = "wsgate"
		}
		if so.DontListen {
			// The server starts routing only after its client listener.
			so.DontListen = false
			so.Host, so.Port = "127.0.0.1", -1
			so.Cluster.NoAdvertise = true
		}
		if so.ServerName == "" {
			so.ServerName = "wsgate-" + strings.NewReplacer(":", "-", "[", "", "]", "").Replace(o.ClusterAddr)
		}
		for _, r := range o.Routes {
			u, err := routeURL(r, o.ClusterUser, o.ClusterPassword)
			if err != nil {
				return nil, err
			}
			so.Routes = append(so.Routes, u)
		}
		if len(so.Routes) == 0 {
			return nil, errors.New("natsbroker: EmbeddedOptions.ClusterAddr needs Routes to the other nodes (JetStream clusters over routes)")
		}
	} else if len(o.Routes) > 0 {
		return nil, errors.New("natsbroker: EmbeddedOptions.Routes need a ClusterAddr")
	}
	if so.ServerName == "" {
		so.ServerName = "wsgate"
	}
	if so.StoreDir == "" {
		so.StoreDir = filepath.Join(os.TempDir(), "wsgate-nats", so.ServerName)
	}
	return so, nil
}

func splitHostPort(field, addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("natsbroker: EmbeddedOptions.%s %q: %w", field, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("natsbroker: EmbeddedOptions.%s %q: bad port", field, addr)
	}
	if port == 0 {
		port = -1 // the server's spelling of "any free port"
	}
	return host, port, nil
}

func routeURL(r, user, password string) (*url.URL, error) {
	if !strings.Contains(r, "://") {
		r = "nats-route://" + r
	}
	u, err := url.Parse(r)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("natsbroker: EmbeddedOptions.Routes: bad route %q", r)
	}
	if u.User == nil && user != "" {
		u.User = url.UserPassword(user, password)
	}
	return u, nil
}

// InProcessConn returns a connection to the server without a socket; it
// makes Embedded a nats.InProcessConnProvider for Options.InProcess.
func (e *Embedded) InProcessConn() (net.Conn, error) { return e.srv.InProcessConn() }

// Name returns the server's name.
func (e *Embedded) Name() string { return e.name }

// ClientURL returns the URL NATS clients connect to, "" without a
// ClientAddr.
func (e *Embedded) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// ClusterAddr returns the address the server accepts routes on (with the
// port chosen when ClusterAddr asked for port 0), "" when standalone.
func (e *Embedded) ClusterAddr() string {
	if a := e.srv.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Shutdown stops the server and waits, bounded by ctx, until it has. It is
// idempotent.
func (e *Embedded) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		e.shutdown()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("natsbroker: embedded NATS shutdown: %w", ctx.Err())
	}
}

func (e *Embedded) shutdown() {
	e.shutdownOnce.Do(func() {
		e.srv.Shutdown()
	})
	e.srv.WaitForShutdown()
}

// slogLogger adapts slog to the NATS server's logger.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Noticef(format string, v ...any) {
	s.l.Info(fmt.Sprintf(format, v...), "component", "nats")
}
func (s slogLogger) Warnf(format string, v ...any) {
	s.l.Warn(fmt.Sprintf(format, v...), "component", "nats")
}
func (s slogLogger) Fatalf(format string, v ...any) {
	s.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}
func (s slogLogger) Errorf(format string, v ...any) {
	s.l.Error(fmt.Sprintf(format, v...), "component", "nats")
}
func (s slogLogger) Debugf(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), "component", "nats")
}
func (s slogLogger) Tracef(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), "component", "nats")
}
