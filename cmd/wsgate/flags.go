package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"github.com/wsgate/wsgate/internal/server"
)

// version is the program's version, set at build time with
// -ldflags "-X main.version=v1.2.3". When it is left at "dev", the module
// version or VCS revision recorded by the go command is used instead.
var version = "dev"

// envPrefix starts the environment variable of every flag: -max-conns is
// also read from WSGATE_MAX_CONNS.
const envPrefix = "WSGATE_"

const description = `wsgate serves the WebSocket echo server of the tutorial, ready for real use:
/ws echoes every message back with its type and sends the text message
"heartbeat" every -heartbeat; / serves a browser client for it; /healthz and
/readyz are for load balancers. SIGINT or SIGTERM shuts down gracefully
(a second signal exits at once).

Every flag can also be set with the environment variable shown next to it;
a flag on the command line wins over the environment.`

// options is the parsed command line.
type options struct {
	server      server.Config
	logFormat   string // "text" or "json"
	logLevel    slog.Level
	showVersion bool
}

// errHelp is returned by parseArgs when -help was asked for; the usage has
// been written and the program should exit with status 0.
var errHelp = flag.ErrHelp

// parseArgs parses the command line args (without the program name), with
// defaults taken from getenv's WSGATE_* variables. The help text asked for
// with -help goes to stdout and returns errHelp; errors go to stderr.
func parseArgs(args []string, getenv func(string) string, stdout, stderr io.Writer) (options, error) {
	var (
		o            options
		heartbeat    time.Duration
		pingInterval time.Duration
		maxConns     int
		allowOrigin  string
		logLevel     string
	)
	fs := flag.NewFlagSet("wsgate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.server.Addr, "addr", server.DefaultAddr, "TCP `address` to listen on")
	fs.DurationVar(&heartbeat, "heartbeat", server.DefaultHeartbeat, "how often every connection gets the text message \"heartbeat\"; 0 disables")
	fs.StringVar(&allowOrigin, "allow-origin", "", "comma-separated host `patterns` (path.Match syntax, e.g. \"*.example.com,localhost:*\") of other sites whose pages may connect; same-origin pages always may; \"*\" allows every origin (logged as a warning)")
	fs.IntVar(&maxConns, "max-conns", server.DefaultMaxConns, "maximum WebSocket connections at once, beyond which /ws answers 503; 0 means no limit")
	fs.Int64Var(&o.server.MaxMessageSize, "max-message-size", server.DefaultMaxMessageSize, "largest message in `bytes` a client may send; a larger one closes the connection with 1009")
	fs.DurationVar(&o.server.HandshakeTimeout, "handshake-timeout", server.DefaultHandshakeTimeout, "time allowed to read a request's headers (the opening handshake)")
	fs.DurationVar(&o.server.ShutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "time allowed for the graceful shutdown before remaining connections are cut off")
	fs.DurationVar(&pingInterval, "ping-interval", 20*time.Second, "how often a protocol ping checks that each client is alive; 0 disables")
	fs.DurationVar(&o.server.PingTimeout, "ping-timeout", 10*time.Second, "how long a client may stay silent after a ping before it is disconnected")
	fs.BoolVar(&o.server.Compression, "compression", false, "enable permessage-deflate compression on /ws for clients that offer it")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&logLevel, "log-level", "info", "minimum log `level`: debug, info, warn or error")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	fs.Usage = func() {} // printed below, to stdout for -help
	out := stderr

	// The environment first, then the command line on top of it.
	var envErrs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if name == "" {
			return
		}
		if v := getenv(name); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErrs = append(envErrs, fmt.Errorf("invalid value %q for %s: %w", v, name, err))
			}
		}
	})
	if err := errors.Join(envErrs...); err != nil {
		fmt.Fprintln(out, err)
		return o, err
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			usage(fs)
			return o, errHelp
		}
		fmt.Fprintln(out, "Run 'wsgate -help' for usage.")
		return o, err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected argument %q", fs.Arg(0))
		fmt.Fprintf(out, "%v\nRun 'wsgate -help' for usage.\n", err)
		return o, err
	}

	// Translate "0 disables" on the command line into the Config's
	// "negative disables" (the Config's zero value means the default).
	o.server.Heartbeat = disableZero(heartbeat)
	o.server.PingInterval = disableZero(pingInterval)
	o.server.MaxConns = maxConns
	if maxConns <= 0 {
		o.server.MaxConns = -1
	}
	for _, p := range strings.Split(allowOrigin, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.server.AllowOrigins = append(o.server.AllowOrigins, p)
		}
	}
	o.server.Version = buildVersion()

	var errs []error
	switch o.logFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("invalid -log-format %q: want text or json", o.logFormat))
	}
	if err := o.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		errs = append(errs, fmt.Errorf("invalid -log-level %q: want debug, info, warn or error", logLevel))
	}
	for name, d := range map[string]time.Duration{
		"-handshake-timeout": o.server.HandshakeTimeout,
		"-shutdown-timeout":  o.server.ShutdownTimeout,
		"-ping-timeout":      o.server.PingTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("invalid %s %v: must be positive", name, d))
		}
	}
	if o.server.MaxMessageSize <= 0 {
		errs = append(errs, fmt.Errorf("invalid -max-message-size %d: must be positive", o.server.MaxMessageSize))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(out, err)
		return o, err
	}
	return o, nil
}

// disableZero maps a flag's "0 disables" to the Config's "negative
// disables".
func disableZero(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// envName returns the environment variable of a flag, or "" for -version,
// which only makes sense on the command line.
func envName(flagName string) string {
	if flagName == "version" {
		return ""
	}
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// usage writes the help text: a usage line, a description and every flag
// with its environment variable and default.
func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "Usage: wsgate [flags]\n\n%s\n\nFlags:\n", description)
	fs.VisitAll(func(f *flag.Flag) {
		typ, help := flag.UnquoteUsage(f)
		fmt.Fprintf(w, "  -%s", f.Name)
		if typ != "" {
			fmt.Fprintf(w, " %s", typ)
		}
		fmt.Fprintln(w)
		for _, line := range wrap(help, 72) {
			fmt.Fprintf(w, "      %s\n", line)
		}
		var notes []string
		if env := envName(f.Name); env != "" {
			notes = append(notes, "env "+env)
		}
		switch {
		case f.DefValue == "" || f.DefValue == "false":
		case typ == "string" || typ == "address" || typ == "format" || typ == "level":
			notes = append(notes, fmt.Sprintf("default %q", f.DefValue))
		default:
			notes = append(notes, "default "+f.DefValue)
		}
		if len(notes) > 0 {
			fmt.Fprintf(w, "      (%s)\n", strings.Join(notes, ", "))
		}
	})
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
