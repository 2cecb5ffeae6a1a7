package loadtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// Exit statuses of the command.
const (
	ExitOK          = 0
	ExitTooManyErrs = 1 // the error ratio exceeded -max-errors
	ExitUsage       = 2
	ExitInterrupted = 130
)

const usageHead = `usage: wsgate-bench <mode> [flags] ws://host:port/path

Modes:
  echo     C connections in a closed loop, N messages in flight each:
           msgs/s, MB/s, latency percentiles
  idle     ramp N connections at -rate/s and hold them: with -pid, the
           server's RSS per connection
  connect  dial, upgrade, one echo, close, in a loop from -c workers:
           connects/s
  slow     echo, plus -slow clients that write but never read
  pubsub   Centrifugo client protocol (v2, JSON) against Centrifugo, wsgate's
           hub or a baseline: -n subscribers on -channel, publications from
           a client or the HTTP API (-publish). -measure max (default):
           highest lossless deliveries/s, stepping the rate up and
           bisecting; rate: losses and latency at -deliveries/s; idle:
           server RSS per subscribed connection (-pid); connect: connect +
           subscribe cycles/s and server CPU per cycle. Against a cluster,
           give the nodes' URLs as one comma-separated list: subscribers
           are spread over them, the publisher goes to -publish-url, and
           -node-pids reports each process's CPU per publication

Replies (pubsub: publications) are matched by content (sequence number
and timestamp in the payload); other server messages are counted and
ignored.
echo -raw sends pre-built frames over plain TCP to a byte echo server
(bench/servers/tcpecho) to measure the generator's own ceiling.

Flags:
`

// Main runs the wsgate-bench command line: args are the arguments after
// the program name. It returns the process exit status. The human summary
// goes to stdout, or with -json the report goes to stdout and the summary
// to stderr. A live progress line is drawn on stderr when it is a terminal.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, opts, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "wsgate-bench: %v\n", err)
		fmt.Fprintln(stderr, "run 'wsgate-bench -h' for usage")
		return ExitUsage
	}
	if f, ok := stderr.(*os.File); ok && IsTerminal(f) {
		cfg.Progress = stderr
	}
	if opts.cpuProfile != "" {
		stop, err := startProfile(opts.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "wsgate-bench: %v\n", err)
			return ExitUsage
		}
		defer stop()
	}
	rep, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "wsgate-bench: %v\n", err)
		return ExitUsage
	}
	summary := stdout
	if opts.json {
		summary = stderr
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(stderr, "wsgate-bench: writing JSON: %v\n", err)
		}
	}
	rep.WriteText(summary)
	switch {
	case rep.Interrupted:
		return ExitInterrupted
	case rep.hasError(emfileKind):
		fmt.Fprintln(stderr, "wsgate-bench: the generator ran out of file descriptors before the run was complete")
		return ExitTooManyErrs
	case rep.ErrorRatio > opts.maxErrors:
		fmt.Fprintf(stderr, "wsgate-bench: error ratio %.3g exceeds -max-errors %g\n", rep.ErrorRatio, opts.maxErrors)
		return ExitTooManyErrs
	case rep.Established == 0:
		fmt.Fprintln(stderr, "wsgate-bench: no connection was established")
		return ExitTooManyErrs
	}
	return ExitOK
}

// startProfile starts CPU profiling into path.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

type cliOptions struct {
	json       bool
	maxErrors  float64
	cpuProfile string
}

// parseArgs turns the command line into a Config. Flags may come before
// or after the URL.
func parseArgs(args []string, stderr io.Writer) (Config, cliOptions, error) {
	var cfg Config
	var opts cliOptions
	fs := flag.NewFlagSet("wsgate-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Conns, "c", 0, "connections (connect, pubsub connect: concurrent workers) (default 100; connect 64)")
	fs.IntVar(&cfg.Inflight, "inflight", 0, "messages in flight per connection (default 1)")
	fs.IntVar(&cfg.Size, "size", 0, "payload bytes per message (pubsub: publication data) (default 64)")
	fs.BoolVar(&cfg.Binary, "binary", false, "send binary messages instead of text")
	fs.DurationVar(&cfg.Duration, "duration", 0, "measured time, after warmup (default 10s unless -count is given; pubsub max: per step, default 5s)")
	fs.Int64Var(&cfg.Count, "count", 0, "stop after this many measured replies (connect: cycles)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "traffic before measuring starts")
	fs.BoolVar(&cfg.Raw, "raw", false, "echo only: raw TCP frames against a byte echo server (tcpecho)")
	fs.IntVar(&cfg.N, "n", 0, "idle: connections to open; pubsub: subscribers (default 1000)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "idle, pubsub idle: new connections per second (default 5000)")
	fs.DurationVar(&cfg.Hold, "hold", 0, "idle, pubsub idle: how long to hold the connections (default 10s)")
	fs.IntVar(&cfg.Traffic, "traffic", 0, "idle: messages of -size bytes each connection sends in -fragments fragments, and has echoed, before it idles")
	fs.IntVar(&cfg.Fragments, "fragments", 0, "idle -traffic: fragments per message, each written in two pieces 2 ms apart (default 4)")
	fs.BoolVar(&cfg.Compress, "compress", false, "idle: offer permessage-deflate like a browser (client context takeover allowed) and compress -traffic")
	fs.IntVar(&cfg.Slow, "slow", 0, "slow: clients that write but never read")
	fs.IntVar(&cfg.SlowRate, "slow-rate", 0, "slow: messages per second each slow client writes (default 1000)")
	measure := fs.String("measure", "", "pubsub: max, rate, idle or connect (default max)")
	fs.StringVar(&cfg.Channel, "channel", "", "pubsub: channel to subscribe and publish to (default \"bench\")")
	fs.StringVar(&cfg.Publish, "publish", "", "pubsub: publish from a connected client or through the HTTP API: client or api (default client)")
	fs.StringVar(&cfg.APIURL, "api-url", "", "pubsub: HTTP API publish endpoint (default http://<URL's host>/api/publish)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "pubsub: HTTP API key, sent as X-API-Key")
	fs.IntVar(&cfg.PublishWindow, "publish-window", 0, "pubsub: most publish commands awaiting their reply (default 32); the API publisher sends one request at a time")
	fs.Float64Var(&cfg.Deliveries, "deliveries", 0, "pubsub: offered deliveries/s (publications/s × subscribers): the rate of -measure rate (default 50000), the first step of max (default 10000)")
	fs.Float64Var(&cfg.Growth, "growth", 0, "pubsub max: rate factor between steps until one fails, then bisect (default 2)")
	fs.Float64Var(&cfg.Precision, "precision", 0, "pubsub max: stop when the lowest failing rate is within this fraction above the best passing one (default 0.1)")
	fs.IntVar(&cfg.MaxSteps, "max-steps", 0, "pubsub max: at most this many steps (default 12)")
	fs.DurationVar(&cfg.MaxLag, "max-lag", 0, "pubsub: a step fails when its p99 publish-to-receive latency exceeds this (default 1s)")
	fs.IntVar(&cfg.SrcIPs, "src-ips", 0, "source addresses 127.0.0.2…: 0 = enough for < 24k conns each (connect: 4), -1 = none")
	fs.IntVar(&cfg.PID, "pid", 0, "server PID: report its RSS and CPU from /proc")
	fs.StringVar(&cfg.PublishURL, "publish-url", "", "pubsub: where the client publisher connects, and the host of the default -api-url (default: the first URL)")
	nodePIDs := fs.String("node-pids", "", "pubsub: comma-separated `PIDs` of server processes (a cluster's nodes, its NATS servers) whose CPU each step reports, also per publication")
	fs.DurationVar(&cfg.DialTimeout, "dial-timeout", 0, "bound on each dial and handshake (default 10s)")
	var tlsCA string
	fs.StringVar(&tlsCA, "tls-ca", "", "wss:// URLs: trust the certificates in this PEM `file` (such as the server's self-signed one) instead of the system's roots")
	fs.StringVar(&cfg.Label, "label", "", "name of the server under test, copied into the report")
	fs.BoolVar(&opts.json, "json", false, "write the report as JSON on stdout (summary goes to stderr)")
	fs.Float64Var(&opts.maxErrors, "max-errors", 0.001, "exit with status 1 when errors/operations exceeds this ratio")
	fs.StringVar(&opts.cpuProfile, "cpuprofile", "", "write the generator's CPU profile to this `file` (to check it is not the bottleneck)")

	if len(args) == 0 {
		fs.Usage()
		return cfg, opts, errors.New("missing mode")
	}
	mode := args[0]
	switch mode {
	case "-h", "-help", "--help", "help":
		fs.Usage()
		return cfg, opts, flag.ErrHelp
	}
	if strings.HasPrefix(mode, "-") {
		return cfg, opts, fmt.Errorf("the mode comes first: wsgate-bench <mode> [flags] URL")
	}
	cfg.Mode = Mode(mode)
	var pos []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			return cfg, opts, err
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		rest = rest[1:]
	}
	if len(pos) != 1 {
		return cfg, opts, fmt.Errorf("want exactly one URL, got %d arguments %q", len(pos), pos)
	}
	cfg.URL = pos[0]
	if urls := strings.Split(pos[0], ","); len(urls) > 1 {
		if cfg.Mode != ModePubSub {
			return cfg, opts, fmt.Errorf("several URLs (a comma-separated list) only work with pubsub")
		}
		cfg.URL, cfg.URLs = urls[0], urls
	}
	for _, p := range strings.Split(*nodePIDs, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 0 {
			return cfg, opts, fmt.Errorf("-node-pids: bad PID %q", p)
		}
		cfg.NodePIDs = append(cfg.NodePIDs, pid)
	}
	cfg.Measure = Measure(*measure)
	if cfg.Measure != "" && cfg.Mode != ModePubSub {
		return cfg, opts, fmt.Errorf("-measure only works with pubsub")
	}
	if tlsCA != "" {
		pem, err := os.ReadFile(tlsCA)
		if err != nil {
			return cfg, opts, fmt.Errorf("-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, opts, fmt.Errorf("-tls-ca %s: no PEM certificate found", tlsCA)
		}
		cfg.TLSConfig = &tls.Config{RootCAs: pool}
	}
	if opts.maxErrors < 0 {
		return cfg, opts, fmt.Errorf("-max-errors must be >= 0")
	}
	c := cfg
	c.Defaults()
	if err := c.Validate(); err != nil {
		return cfg, opts, err
	}
	return cfg, opts, nil
}
