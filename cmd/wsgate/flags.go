package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/auth"
	"github.com/wsgate/wsgate/hub"
	"github.com/wsgate/wsgate/internal/server"
)

// version is the program's version, set at build time with
// -ldflags "-X main.version=v1.2.3". When it is left at "dev", the module
// version or VCS revision recorded by the go command is used instead.
var version = "dev"

// envPrefix starts the environment variable of every flag: -max-conns is
// also read from WSGATE_MAX_CONNS.
const envPrefix = "WSGATE_"

const description = `wsgate serves the WebSocket echo server of the tutorial, ready for real
use, and a real-time hub that speaks Centrifugo's protocol: /ws echoes every
message back with its type and sends the text message "heartbeat" every
-heartbeat; /connection/websocket serves Centrifugo's client SDKs (channels,
history, presence, JWT tokens) and /api/ its server API (-api-key); / serves
a browser client for both; /healthz and /readyz are for load balancers.
SIGINT or SIGTERM shuts down gracefully (a second signal exits at once).

Every setting can come from a flag, from the environment variable shown
next to it, or from the -config file (YAML or JSON) under the key shown.
A flag wins over the environment, the environment over the file, and the
file over the default. -print-config shows the result.

For a local pub/sub demo without tokens, in the page at /:
  wsgate -allow-anonymous -allow-publish -presence \
    -history-size 100 -history-ttl 5m`

// options is the parsed command line.
type options struct {
	server      server.Config
	logFormat   string // "text" or "json"
	logLevel    slog.Level
	showVersion bool
	printConfig bool   // -print-config: print the effective configuration and exit
	configFile  string // the -config file, "" if none
	// The token public keys as the file gives them (PEM text, or a PEM
	// file's absolute path), for -print-config.
	tokenRSA, tokenECDSA string
	// The broker's TLS PEM settings as given (text, or a file's absolute
	// path): CA, certificate, key.
	brokerTLS [3]string
}

// errHelp is returned by parseArgs when -help was asked for; the usage has
// been written and the program should exit with status 0.
var errHelp = flag.ErrHelp

// setting is one configuration setting: its flag, environment variable and
// config file key, and where it goes in a fileConfig.
type setting struct {
	flag  string // flag name without "-"; the env var derives from it
	key   string // dotted key in the config file; "" for command-line-only flags
	field string // the server.Config field it sets, to name it in errors
	typ   string // the value's kind in -help ("duration", "int", ...); "" for booleans
	def   string // default, as -help shows it
	usage string
	noEnv bool                                    // command-line only (-version, -print-config)
	value func(*fileConfig, *cliFlags) flag.Value // binds the setting's storage
}

// cliFlags holds the flags that are not settings of the server.
type cliFlags struct {
	config      string
	printConfig bool
	version     bool
}

// settings lists every flag, in -help's order.
var settings = []setting{
	{flag: "config", typ: "file", usage: "read settings from this YAML (.yaml, .yml) or JSON (.json) `file`; flags and environment variables override it",
		value: func(_ *fileConfig, c *cliFlags) flag.Value { return (*stringFlag)(&c.config) }},
	{flag: "addr", key: "http_server.address, http_server.port", field: "Addr", typ: "address", def: server.DefaultAddr,
		usage: "TCP address to listen on (host:port)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value {
			return &addrFlag{&fc.HTTPServer.Address, &fc.HTTPServer.Port}
		}},
	{flag: "allowed-hosts", key: "http_server.allowed_hosts", field: "AllowedHosts", typ: "patterns",
		usage: "comma-separated Host header `patterns` the server answers, e.g. \"ws.example.com,*.example.org:8443\"; other hosts get 421; default: localhost, 127.0.0.1 and [::1] when listening on a loopback address, else any host (no DNS-rebinding defence); \"*\" allows any host",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return (*listFlag)(&fc.HTTPServer.AllowedHosts) }},
	{flag: "heartbeat", key: "echo.heartbeat", field: "Heartbeat", typ: "duration", def: server.DefaultHeartbeat.String(),
		usage: "how often every connection gets the text message \"heartbeat\"; 0 disables",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.Echo.Heartbeat} }},
	{flag: "allow-origin", key: "client.allowed_origins", field: "AllowOrigins", typ: "patterns",
		usage: "comma-separated host `patterns` (path.Match syntax, e.g. \"*.example.com,localhost:*\") of other sites whose pages may connect; same-origin pages always may; \"*\" allows every origin (logged as a warning)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return (*listFlag)(&fc.Client.AllowedOrigins) }},
	{flag: "max-conns", key: "client.connection_limit", field: "MaxConns", typ: "int", def: strconv.Itoa(server.DefaultMaxConns),
		usage: "maximum WebSocket connections at once, beyond which /ws answers 503; 0 means no limit",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return intFlag{&fc.Client.ConnectionLimit} }},
	{flag: "max-http-conns", key: "http_server.max_conns", field: "MaxHTTPConns", typ: "int", def: strconv.Itoa(server.DefaultMaxHTTPConns),
		usage: "maximum HTTP connections at once that are not WebSockets (page, health checks, keep-alive, handshakes in progress); beyond it an idle one is closed or the new one gets a 503; 0 means no limit",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return intFlag{&fc.HTTPServer.MaxConns} }},
	{flag: "max-message-size", key: "websocket.message_size_limit", field: "MaxMessageSize", typ: "bytes", def: strconv.Itoa(server.DefaultMaxMessageSize),
		usage: "largest message in `bytes` a client may send; a larger one closes the connection with 1009",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return int64Flag{&fc.WebSocket.MessageSizeLimit} }},
	{flag: "memory-budget", key: "websocket.memory_budget", field: "MemoryBudget", typ: "bytes", def: strconv.Itoa(server.DefaultMemoryBudget),
		usage: "`bytes` all WebSocket connections together may hold in buffers; over it the heaviest are closed (1009 or 1008); -1 means no budget",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return int64Flag{&fc.WebSocket.MemoryBudget} }},
	{flag: "max-header-bytes", key: "http_server.max_header_bytes", field: "MaxHeaderBytes", typ: "bytes", def: strconv.Itoa(server.DefaultMaxHeaderBytes),
		usage: "largest request headers in `bytes` (at most 65536); larger ones get 431",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return intFlag{&fc.HTTPServer.MaxHeaderBytes} }},
	{flag: "handshake-timeout", key: "http_server.handshake_timeout", field: "HandshakeTimeout", typ: "duration", def: server.DefaultHandshakeTimeout.String(),
		usage: "time allowed to read a request's headers (the opening handshake)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.HTTPServer.HandshakeTimeout} }},
	{flag: "read-timeout", key: "http_server.read_timeout", field: "ReadTimeout", typ: "duration", def: server.DefaultReadTimeout.String(),
		usage: "time allowed to read a whole request, headers and body, from its first byte; at least -handshake-timeout (the default follows it when it is longer)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.HTTPServer.ReadTimeout} }},
	{flag: "write-timeout", key: "http_server.write_timeout", field: "WriteTimeout", typ: "duration", def: server.DefaultWriteTimeout.String(),
		usage: "time allowed for a non-WebSocket request from the end of its headers to the end of the answer",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.HTTPServer.WriteTimeout} }},
	{flag: "idle-timeout", key: "http_server.idle_timeout", field: "IdleTimeout", typ: "duration", def: duration(server.DefaultIdleTimeout).String(),
		usage: "how long an HTTP keep-alive connection may wait for its next request",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.HTTPServer.IdleTimeout} }},
	{flag: "shutdown-timeout", key: "shutdown.timeout", field: "ShutdownTimeout", typ: "duration", def: server.DefaultShutdownTimeout.String(),
		usage: "time allowed for the graceful shutdown before remaining connections are cut off",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.Shutdown.Timeout} }},
	{flag: "ping-interval", key: "client.ping_interval", field: "PingInterval", typ: "duration", def: wsgate.DefaultPingInterval.String(),
		usage: "how often a protocol ping checks that each client is alive; 0 disables",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.Client.PingInterval} }},
	{flag: "ping-timeout", key: "client.pong_timeout", field: "PingTimeout", typ: "duration", def: wsgate.DefaultPingTimeout.String(),
		usage: "how long a client may stay silent after a ping before it is disconnected",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.Client.PongTimeout} }},
	{flag: "compression", key: "websocket.compression", field: "Compression", def: "false",
		usage: "enable permessage-deflate compression on /ws for clients that offer it",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.WebSocket.Compression} }},
	{flag: "event-loops", key: "websocket.event_loops", field: "EventLoops", typ: "int", def: "0",
		usage: "event loops serving the WebSocket connections; 0 means one per GOMAXPROCS (the cores the process may use)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return intFlag{&fc.WebSocket.EventLoops} }},
	{flag: "memory-release", key: "websocket.memory_release", field: "MemoryRelease", typ: "duration", def: wsgate.DefaultMemoryQuiet.String(),
		usage: "after traffic with large messages stops for this long, give the memory it left behind back to the system (two garbage collections, at most once per 15 such periods); 0 disables",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return durationFlag{&fc.WebSocket.MemoryRelease} }},
	{flag: "token-hmac-secret", key: "client.token.hmac_secret_key", field: "Tokens.HMACSecret", typ: "secret",
		usage: "HMAC `secret` that verifies HS256 connection and subscription tokens (JWT) on /connection/websocket; prefer the environment or the file, since a flag shows in ps",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Client.Token.HMACSecretKey} }},
	{flag: "allow-anonymous", key: "client.allow_anonymous_connect_without_token", field: "AllowAnonymous", def: "false",
		usage: "let clients connect to /connection/websocket without a token (as anonymous users)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.Client.AllowAnonymous} }},
	{flag: "api-key", key: "http_api.key", field: "APIKey", typ: "key",
		usage: "`key` of the server API (/api/publish, ...), sent in the X-API-Key header; without one every API request gets 401",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.HTTPAPI.Key} }},
	{flag: "api-addr", key: "http_api.address, http_api.port", field: "APIAddr", typ: "address",
		usage: "serve the server API on its own TCP address (host:port) instead of /api/ on -addr",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return &addrFlag{&fc.HTTPAPI.Address, &fc.HTTPAPI.Port} }},
	{flag: "history-size", key: "channel.without_namespace.history_size", field: "Channels.Default.HistorySize", typ: "int", def: "0",
		usage: "publications kept per channel without a namespace, with -history-ttl; clients that come back recover what they missed; 0: no history",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return intFlag{&fc.Channel.WithoutNamespace.HistorySize} }},
	{flag: "history-ttl", key: "channel.without_namespace.history_ttl", field: "Channels.Default.HistoryTTL", typ: "duration", def: "0s",
		usage: "how long each publication is kept in history, with -history-size; 0: no history",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value {
			return durationFlag{&fc.Channel.WithoutNamespace.HistoryTTL}
		}},
	{flag: "presence", key: "channel.without_namespace.presence", field: "Channels.Default.Presence", def: "false",
		usage: "keep who is subscribed to each channel without a namespace; subscribers may ask",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.Channel.WithoutNamespace.Presence} }},
	{flag: "join-leave", key: "channel.without_namespace.join_leave", field: "Channels.Default.JoinLeave", def: "false",
		usage: "push a join and a leave to every subscriber of a channel without a namespace when a client subscribes or leaves",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.Channel.WithoutNamespace.JoinLeave} }},
	{flag: "allow-publish", key: "channel.without_namespace.allow_publish_for_subscriber", field: "Channels.Default.AllowPublishForSubscriber", def: "false",
		usage: "let subscribers of a channel without a namespace publish to it",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value {
			return boolFlag{&fc.Channel.WithoutNamespace.AllowPublishForSubscriber}
		}},
	{flag: "tls-cert", key: "http_server.tls.cert_pem", field: "TLSCertFile", typ: "file",
		usage: "serve TLS (wss://, https://) on every listener with this PEM certificate `file` (and its chain), with -tls-key; reloaded on SIGHUP and when the file changes",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.HTTPServer.TLS.CertPEM} }},
	{flag: "tls-key", key: "http_server.tls.key_pem", field: "TLSKeyFile", typ: "file",
		usage: "PEM private key `file` of -tls-cert",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.HTTPServer.TLS.KeyPEM} }},
	{flag: "metrics", key: "prometheus.enabled", field: "DisableMetrics", def: "true",
		usage: "serve Prometheus metrics at /metrics, on -admin-addr when set, else on -addr; -metrics=false turns them off",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.Prometheus.Enabled} }},
	{flag: "admin-addr", key: "http_server.internal_address, http_server.internal_port", field: "AdminAddr", typ: "address",
		usage: "serve /metrics, /admin (-admin), /debug/pprof/ (-pprof), /healthz and /readyz on this TCP address (host:port; \":9090\" means 127.0.0.1:9090) for operators, and /metrics no longer on -addr",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value {
			return &addrFlag{&fc.HTTPServer.InternalAddress, &fc.HTTPServer.InternalPort}
		}},
	{flag: "admin", key: "admin.enabled", field: "Admin", def: "false",
		usage: "serve the admin dashboard at /admin on -admin-addr, behind -admin-password",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.Admin.Enabled} }},
	{flag: "admin-password", key: "admin.password", field: "AdminPassword", typ: "secret",
		usage: "`password` of the admin dashboard (at least 8 characters; HTTP Basic authentication, any user name); prefer the environment or the file, since a flag shows in ps",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Admin.Password} }},
	{flag: "pprof", key: "debug.enabled", field: "Pprof", def: "false",
		usage: "serve Go's profiler at /debug/pprof/ on -admin-addr (never on -addr)",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return boolFlag{&fc.Debug.Enabled} }},
	{flag: "log-format", key: "log.format", typ: "format", def: "text",
		usage: "log `format`: text or json",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Log.Format} }},
	{flag: "log-level", key: "log.level", typ: "level", def: "info",
		usage: "minimum log `level`: debug, info, warn or error",
		value: func(fc *fileConfig, _ *cliFlags) flag.Value { return stringPtrFlag{&fc.Log.Level} }},
	{flag: "print-config", noEnv: true,
		usage: "print the effective configuration (flags, environment, file and defaults; secrets masked) in the config file's format, YAML without one, and exit",
		value: func(_ *fileConfig, c *cliFlags) flag.Value { return (*plainBool)(&c.printConfig) }},
	{flag: "version", noEnv: true, usage: "print the version and exit",
		value: func(_ *fileConfig, c *cliFlags) flag.Value { return (*plainBool)(&c.version) }},
}

// newFlagSet returns a FlagSet whose flags write into fc and cli.
func newFlagSet(fc *fileConfig, cli *cliFlags, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("wsgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed by parseArgs, to stdout for -help
	for _, s := range settings {
		fs.Var(s.value(fc, cli), s.flag, s.usage)
		fs.Lookup(s.flag).DefValue = s.def
	}
	return fs
}

// source says where a setting's value came from, as errors name it.
type source struct {
	name  string // "-read-timeout", "WSGATE_READ_TIMEOUT" or "http_server.read_timeout"
	where string // " (in FILE)" for the config file
}

// parseArgs parses the command line args (without the program name) on top
// of getenv's WSGATE_* variables, on top of the -config file (from args or
// WSGATE_CONFIG), on top of the defaults. The help text asked for with
// -help goes to stdout and returns errHelp; errors go to stderr and name
// the setting and where it was set.
func parseArgs(args []string, getenv func(string) string, stdout, stderr io.Writer) (options, error) {
	o, err := parse(args, getenv, stdout, stderr)
	var ue usageError
	switch {
	case err == nil || errors.Is(err, errHelp):
	case errors.As(err, &ue) && ue.reported:
		fmt.Fprintln(stderr, "Run 'wsgate -help' for usage.")
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%v\nRun 'wsgate -help' for usage.\n", err)
	default:
		fmt.Fprintln(stderr, err)
	}
	return o, err
}

// usageError is an error in the command line itself.
type usageError struct {
	error
	reported bool // the flag package has written it already
}

func parse(args []string, getenv func(string) string, stdout, stderr io.Writer) (options, error) {
	var o options
	// First pass: the command line alone, for its errors, -help and the
	// config file's name.
	var first fileConfig
	var cli cliFlags
	fs := newFlagSet(&first, &cli, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			usage(fs)
			return o, errHelp
		}
		return o, usageError{err, true}
	}
	if fs.NArg() > 0 {
		return o, usageError{error: fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	o.showVersion, o.printConfig = cli.version, cli.printConfig
	o.server.Version = buildVersion()
	if o.showVersion {
		return o, nil
	}

	// Then the layers from the bottom: file, environment, command line.
	var fc fileConfig
	sources := make(map[string]source)
	o.configFile = cli.config
	if o.configFile == "" {
		o.configFile = getenv(envName("config"))
	}
	if o.configFile != "" {
		if err := loadFile(o.configFile, &fc); err != nil {
			return o, err
		}
		fs := newFlagSet(&fc, new(cliFlags), io.Discard)
		for _, s := range settings {
			if s.key != "" && isSet(fs.Lookup(s.flag).Value) {
				sources[s.flag] = source{name: fileKeyName(s, &fc), where: " (in " + o.configFile + ")"}
			}
		}
	}
	// A FlagSet of its own for the environment: the command line's below
	// must see only the flags given on the command line.
	envFS := newFlagSet(&fc, new(cliFlags), io.Discard)
	var errs []error
	for _, s := range settings {
		name := envName(s.flag)
		if s.key == "" || s.noEnv || name == "" {
			continue
		}
		if v := getenv(name); v != "" {
			if err := envFS.Set(s.flag, v); err != nil {
				errs = append(errs, fmt.Errorf("invalid %s %q: %w", name, v, err))
				continue
			}
			sources[s.flag] = source{name: name}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return o, err
	}
	fs = newFlagSet(&fc, new(cliFlags), io.Discard)
	fs.Parse(args) // cannot fail: the first pass took the same args
	fs.Visit(func(f *flag.Flag) { sources[f.Name] = source{name: "-" + f.Name} })

	if err := o.apply(&fc, sources); err != nil {
		return o, err
	}
	return o, nil
}

// fileKeyName names the key of s that the file set.
func fileKeyName(s setting, fc *fileConfig) string {
	var host *string
	var port *int
	switch s.flag {
	case "addr":
		host, port = fc.HTTPServer.Address, fc.HTTPServer.Port
	case "api-addr":
		host, port = fc.HTTPAPI.Address, fc.HTTPAPI.Port
	case "admin-addr":
		switch h, p := fc.HTTPServer.InternalAddress, fc.HTTPServer.InternalPort; {
		case h != nil && p == nil:
			return "http_server.internal_address"
		case h == nil:
			return "http_server.internal_port"
		}
		return s.key
	default:
		return s.key
	}
	section, _, _ := strings.Cut(s.key, ".")
	switch {
	case host != nil && port == nil:
		return section + ".address"
	case host == nil:
		return section + ".port"
	}
	return s.key
}

// apply checks the merged settings in fc and turns them into o's fields.
// An error names every invalid setting by where it was set.
func (o *options) apply(fc *fileConfig, sources map[string]source) error {
	var errs []error
	bad := func(flagName string, value any, reason string) {
		src, ok := sources[flagName]
		if !ok {
			src.name = "-" + flagName // left at its default
		}
		errs = append(errs, fmt.Errorf("invalid %s %v%s: %s", src.name, value, src.where, reason))
	}
	c := &o.server
	if h := fc.HTTPServer; h.Address != nil || h.Port != nil {
		host, port := "0.0.0.0", 5555
		if def, p, err := splitAddr(server.DefaultAddr); err == nil {
			host, port = def, p
		}
		if h.Address != nil {
			host = *h.Address
		}
		if h.Port != nil {
			port = *h.Port
		}
		if port < 0 || port > 65535 {
			bad("addr", port, "the port must be a number from 0 to 65535")
		}
		c.Addr = net.JoinHostPort(host, strconv.Itoa(port))
	}
	c.AllowedHosts = fc.HTTPServer.AllowedHosts
	c.AllowOrigins = fc.Client.AllowedOrigins
	c.Heartbeat = disableZero(fc.Echo.Heartbeat)
	c.PingInterval = disableZero(fc.Client.PingInterval)
	c.MaxConns = unlimitedZero(fc.Client.ConnectionLimit, "max-conns", bad)
	c.MaxHTTPConns = unlimitedZero(fc.HTTPServer.MaxConns, "max-http-conns", bad)
	for _, d := range []struct {
		flag string
		src  *duration
		dst  *time.Duration
	}{
		{"handshake-timeout", fc.HTTPServer.HandshakeTimeout, &c.HandshakeTimeout},
		{"read-timeout", fc.HTTPServer.ReadTimeout, &c.ReadTimeout},
		{"write-timeout", fc.HTTPServer.WriteTimeout, &c.WriteTimeout},
		{"idle-timeout", fc.HTTPServer.IdleTimeout, &c.IdleTimeout},
		{"shutdown-timeout", fc.Shutdown.Timeout, &c.ShutdownTimeout},
		{"ping-timeout", fc.Client.PongTimeout, &c.PingTimeout},
	} {
		if d.src == nil {
			continue
		}
		if *d.src <= 0 {
			bad(d.flag, *d.src, "must be positive")
			continue
		}
		*d.dst = time.Duration(*d.src)
	}
	// An invalid value is reported and left out of c, so that the
	// server's checks below do not report it again.
	if p := fc.WebSocket.MemoryBudget; p != nil {
		if *p == 0 || *p < -1 {
			bad("memory-budget", *p, "must be positive, or -1 for no budget")
		} else {
			c.MemoryBudget = *p
		}
	}
	if p := fc.WebSocket.MessageSizeLimit; p != nil {
		if *p <= 0 {
			bad("max-message-size", *p, "must be positive")
		} else {
			c.MaxMessageSize = *p
		}
	}
	if p := fc.HTTPServer.MaxHeaderBytes; p != nil {
		if *p <= 0 {
			bad("max-header-bytes", *p, "must be positive")
		} else {
			c.MaxHeaderBytes = *p
		}
	}
	if p := fc.WebSocket.Compression; p != nil {
		c.Compression = *p
	}
	if p := fc.WebSocket.EventLoops; p != nil {
		c.EventLoops = *p // the server checks it
	}
	c.MemoryRelease = disableZero(fc.WebSocket.MemoryRelease)
	o.logFormat = "text"
	if p := fc.Log.Format; p != nil {
		o.logFormat = *p
		if o.logFormat != "text" && o.logFormat != "json" {
			bad("log-format", strconv.Quote(*p), "want text or json")
		}
	}
	o.logLevel = slog.LevelInfo
	if p := fc.Log.Level; p != nil {
		if err := o.logLevel.UnmarshalText([]byte(*p)); err != nil {
			bad("log-level", strconv.Quote(*p), "want debug, info, warn or error")
		}
	}
	errs = append(errs, o.applyHub(fc, bad)...)
	o.applyOps(fc, sources, bad)
	o.applyBroker(fc, bad)
	// What the server itself checks (patterns, relations between
	// settings), named the same way.
	if _, err := c.Effective(); err != nil {
		fes := server.FieldErrors(err)
		if len(fes) == 0 {
			errs = append(errs, err)
		}
		for _, fe := range fes {
			if key, ok := channelKey(fe.Field); ok && !hasFlag(fe.Field) {
				// A file-only key (or a default that follows one).
				errs = append(errs, fmt.Errorf("invalid %s %v%s: %s", key, fe.Value, o.inFile(), fe.Reason))
				continue
			}
			name := fe.Field
			for _, s := range settings {
				if s.field == fe.Field {
					name = s.flag
				}
			}
			bad(name, fe.Value, fe.Reason)
		}
	}
	return errors.Join(errs...)
}

// inFile is the " (in FILE)" that errors about file keys end with.
func (o *options) inFile() string {
	if o.configFile == "" {
		return ""
	}
	return " (in " + o.configFile + ")"
}

// hasFlag reports whether a server.Config field has a flag.
func hasFlag(field string) bool {
	for _, s := range settings {
		if s.field == field {
			return true
		}
	}
	return false
}

// applyHub turns the hub's settings in fc into o's server config: tokens,
// anonymous access, the API and the channels. It returns the errors of
// the keys only the file sets; bad reports those of settings with a flag.
func (o *options) applyHub(fc *fileConfig, bad func(flagName string, value any, reason string)) []error {
	var errs []error
	badKey := func(key string, value any, reason string) {
		errs = append(errs, fmt.Errorf("invalid %s %v%s: %s", key, value, o.inFile(), reason))
	}
	c := &o.server
	c.AllowAnonymous = deref(fc.Client.AllowAnonymous)
	tok := fc.Client.Token
	c.Tokens.HMACSecret = deref(tok.HMACSecretKey)
	c.Tokens.Audience = deref(tok.Audience)
	c.Tokens.Issuer = deref(tok.Issuer)
	if v := deref(tok.RSAPublicKey); v != "" {
		pem, given, err := o.readPEM(v)
		if err == nil {
			c.Tokens.RSAPublicKey, err = auth.ParseRSAPublicKeyPEM(pem)
		}
		if err != nil {
			badKey("client.token.rsa_public_key", abbreviate(v), err.Error())
		}
		o.tokenRSA = given
	}
	if v := deref(tok.ECDSAPublicKey); v != "" {
		pem, given, err := o.readPEM(v)
		if err == nil {
			c.Tokens.ECDSAPublicKey, err = auth.ParseECDSAPublicKeyPEM(pem)
		}
		if err != nil {
			badKey("client.token.ecdsa_public_key", abbreviate(v), err.Error())
		}
		o.tokenECDSA = given
	}

	c.APIKey = deref(fc.HTTPAPI.Key)
	if a := fc.HTTPAPI; a.Port != nil && *a.Port != 0 {
		host := "127.0.0.1"
		if a.Address != nil {
			host = *a.Address
		}
		if *a.Port < 0 || *a.Port > 65535 {
			bad("api-addr", *a.Port, "the port must be a number from 1 to 65535")
		} else {
			c.APIAddr = net.JoinHostPort(host, strconv.Itoa(*a.Port))
		}
	} else if deref(a.Address) != "" {
		bad("api-addr", net.JoinHostPort(*a.Address, strconv.Itoa(deref(a.Port))),
			"an API address needs a port (http_api.port); without one the API is served on the main address")
	}

	ch := fc.Channel
	wn := ch.WithoutNamespace
	quick := server.ChannelDefaults{
		HistorySize:  deref(wn.HistorySize),
		Presence:     deref(wn.Presence),
		JoinLeave:    deref(wn.JoinLeave),
		AllowPublish: deref(wn.AllowPublishForSubscriber),
	}
	if wn.HistoryTTL != nil {
		quick.HistoryTTL = time.Duration(*wn.HistoryTTL)
	}
	channels := &hub.ChannelConfig{
		Default:           channelOptionsTo(server.DefaultChannelOptions(quick, c.AllowAnonymous), wn),
		PrivatePrefix:     defaultTo(ch.PrivatePrefix, defaultPrivatePrefix),
		NamespaceBoundary: defaultTo(ch.NamespaceBoundary, defaultNamespaceBoundary),
		MaxLength:         defaultTo(ch.MaxLength, hub.DefaultChannelMaxLength),
		Namespaces:        []hub.Namespace{},
	}
	for i, ns := range ch.Namespaces {
		if ns.Name == nil {
			badKey(fmt.Sprintf("channel.namespaces[%d]", i), "", "a namespace needs a name")
			continue
		}
		channels.Namespaces = append(channels.Namespaces, hub.Namespace{
			Name:           *ns.Name,
			ChannelOptions: channelOptionsTo(hub.ChannelOptions{}, ns.channelOptions),
		})
	}
	c.Channels = channels
	return errs
}

// The hub's defaults for the rules of channel names, spelled out so that
// -print-config shows them.
const (
	defaultPrivatePrefix     = "$"
	defaultNamespaceBoundary = ":"
)

// readPEM returns the PEM a key setting holds: its text, or the content of
// the file it names (relative to the config file's directory). given is
// the value to print back: the text, or the file's absolute path.
func (o *options) readPEM(v string) (pem []byte, given string, err error) {
	if strings.Contains(v, "-----BEGIN") {
		return []byte(v), v, nil
	}
	path := v
	if !filepath.IsAbs(path) && o.configFile != "" {
		path = filepath.Join(filepath.Dir(o.configFile), path)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	pem, err = os.ReadFile(path)
	if err != nil {
		return nil, path, fmt.Errorf("neither PEM text nor a readable PEM file: %w", err)
	}
	return pem, path, nil
}

// abbreviate shortens a long value (a PEM key) for an error message.
func abbreviate(v string) string {
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	return strconv.Quote(v)
}

// channelKey names the file key of a server.Config field under Channels:
// "Channels.Default.HistoryTTL" is channel.without_namespace.history_ttl,
// "Channels.Namespaces[2].Name" channel.namespaces[2].name.
func channelKey(field string) (string, bool) {
	rest, ok := strings.CutPrefix(field, "Channels.")
	if !ok {
		return "", false
	}
	yamlName := func(t reflect.Type, goName string) string {
		f, ok := t.FieldByName(goName)
		if !ok {
			return goName
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		return name
	}
	opts := reflect.TypeFor[channelOptions]()
	switch {
	case strings.HasPrefix(rest, "Default."):
		return "channel.without_namespace." + yamlName(opts, strings.TrimPrefix(rest, "Default.")), true
	case strings.HasPrefix(rest, "Namespaces["):
		idx, name, _ := strings.Cut(rest, "].")
		return "channel." + strings.ToLower(idx) + "]." + yamlName(reflect.TypeFor[namespaceSection](), name), true
	}
	return "channel." + yamlName(reflect.TypeFor[channelSection](), rest), true
}

// deref returns *p, or the zero value for nil.
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// defaultTo returns *p, or def for nil.
func defaultTo[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// disableZero maps the "0 disables" of flags and file to the Config's
// "negative disables" (its zero value means the default).
func disableZero(d *duration) time.Duration {
	switch {
	case d == nil:
		return 0
	case *d <= 0:
		return -1
	}
	return time.Duration(*d)
}

// unlimitedZero maps the "0 means no limit" of flags and file to the
// Config's "negative means no limit".
func unlimitedZero(n *int, flagName string, bad func(string, any, string)) int {
	switch {
	case n == nil:
		return 0
	case *n < 0:
		bad(flagName, *n, "must not be negative (0 means no limit)")
		return 0
	case *n == 0:
		return -1
	}
	return *n
}

// envName returns the environment variable of a flag, or "" for the flags
// that only make sense on the command line.
func envName(flagName string) string {
	for _, s := range settings {
		if s.flag == flagName && s.noEnv {
			return ""
		}
	}
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// usage writes the help text: a usage line, a description and every flag
// with its environment variable, file key and default.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "Usage: wsgate [flags]\n\n%s\n\nFlags:\n", description)
	for _, s := range settings {
		f := fs.Lookup(s.flag)
		_, help := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  -%s", s.flag)
		if s.typ != "" {
			fmt.Fprintf(w, " %s", s.typ)
		}
		fmt.Fprintln(w)
		for _, line := range wrap(help, 72) {
			fmt.Fprintf(w, "      %s\n", line)
		}
		var notes []string
		if env := envName(s.flag); env != "" {
			notes = append(notes, "env "+env)
		}
		if s.key != "" {
			notes = append(notes, "file "+s.key)
		}
		switch {
		case s.def == "" || s.def == "false":
		case s.typ == "address" || s.typ == "format" || s.typ == "level":
			notes = append(notes, fmt.Sprintf("default %q", s.def))
		default:
			notes = append(notes, "default "+s.def)
		}
		if len(notes) > 0 {
			// Wrapped between notes, never inside one.
			const nbsp = "\x00" // not a space to strings.Fields
			for i, n := range notes {
				notes[i] = strings.ReplaceAll(n, " ", nbsp)
			}
			for _, line := range wrap("("+strings.Join(notes, ", ")+")", 72) {
				fmt.Fprintf(w, "      %s\n", strings.ReplaceAll(line, nbsp, " "))
			}
		}
	}
}

// wrap splits text into lines of at most width bytes at spaces.
func wrap(text string, width int) []string {
	var lines []string
	line := ""
	for _, word := range strings.Fields(text) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// buildVersion returns version, or what the go command recorded about the
// build when version was not set with -ldflags.
func buildVersion() string {
	if version != "dev" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "dev-" + rev + dirty
	}
	return version
}

// newLogger returns the logger the flags ask for, writing to w.
func newLogger(o options, w io.Writer) *slog.Logger {
	ho := &slog.HandlerOptions{Level: o.logLevel}
	if o.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}
