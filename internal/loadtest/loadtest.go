// Package loadtest is the engine of wsgate-bench, a WebSocket load
// generator. It runs one of a few modes against a server and returns a
// Report:
//
//   - echo: C connections in a closed loop, each keeping a fixed number of
//     messages in flight; throughput and latency percentiles.
//   - idle: ramp N connections at a steady rate and hold them; with the
//     server's PID, its resident memory per connection.
//   - connect: dial, upgrade, one echo and the closing handshake, over and
//     over from a few workers; handshakes per second.
//   - slow: echo, plus clients that write but never read; what they do to
//     everyone else's latency.
//   - pubsub: N subscribers on one channel of a server that speaks
//     Centrifugo's client protocol (v2, JSON): the highest lossless rate of
//     deliveries, publish-to-receive latency, memory per idle subscriber,
//     and connect+subscribe cycles. See pubsub.go.
//
// The generator is built on wsgate's event-driven client (Options.OnMessage):
// a connection costs no goroutine, replies are handled on the event loop and
// the next message is written from there without a goroutine switch, so one
// core of load generator keeps pace with one core of server (both then spend
// most of their time in the kernel's TCP code; docs/BENCHMARKS.md has the
// measurements). Each message carries a sequence number and its send time,
// so replies are matched by content and anything else the server sends (a
// "heartbeat", say) is counted and ignored.
//
// echo -raw skips WebSocket altogether: it writes pre-built masked frames to
// a plain TCP echo server (bench/servers/tcpecho) and counts the bytes that
// come back, which measures the generator machine's ceiling.
package loadtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"
)

// Mode selects what a run measures.
type Mode string

// The modes.
const (
	ModeEcho    Mode = "echo"
	ModeIdle    Mode = "idle"
	ModeConnect Mode = "connect"
	ModeSlow    Mode = "slow"
	ModePubSub  Mode = "pubsub"
)

// Measure selects what a pubsub run measures.
type Measure string

// The pubsub measures.
const (
	// MeasureMax steps the publication rate up, then bisects, to find the
	// highest rate of deliveries with nothing lost, duplicated or
	// reordered and a p99 latency within MaxLag.
	MeasureMax Measure = "max"
	// MeasureRate publishes at the fixed rate Deliveries for Duration and
	// reports losses and publish-to-receive latency.
	MeasureRate Measure = "rate"
	// MeasureIdle ramps N subscribers (connect + subscribe) and holds them:
	// with PID, the server's RSS per idle subscribed connection.
	MeasureIdle Measure = "idle"
	// MeasureConnect loops over dial, connect, subscribe and close from
	// Conns workers: cycles per second and server CPU per cycle.
	MeasureConnect Measure = "connect"
)

// Publishers: where pubsub publications come from.
const (
	PublishClient = "client" // a publish command from a connected client
	PublishAPI    = "api"    // POST to the server HTTP API (APIURL)
)

// Config describes one run. Fields that do not apply to the mode are
// ignored; zero values mean the defaults set by Defaults.
type Config struct {
	Mode  Mode
	URL   string // ws://host:port/path (for -raw: any URL naming host:port)
	Label string // free-form name of the server under test, echoed in the report

	// echo, slow, connect
	Conns    int           // concurrent connections (connect: workers)
	Inflight int           // messages in flight per connection
	Size     int           // payload bytes per message
	Binary   bool          // binary messages instead of text
	Duration time.Duration // measured time; 0 with Count means "until Count"
	Count    int64         // stop after this many measured replies (cycles for connect)
	Warmup   time.Duration // traffic before measuring starts
	Raw      bool          // echo only: raw TCP frames against a byte echo server

	// idle
	N    int           // connections to open
	Rate float64       // new connections per second; defaults to 5,000
	Hold time.Duration // how long to hold them once established
	// Traffic is how many messages of Size bytes each connection sends,
	// in Fragments fragments (each written in two pieces, apart), and has
	// echoed before it goes idle: the server's memory after traffic.
	Traffic   int
	Fragments int // defaults to 4
	// Compress offers permessage-deflate the way browsers do (the client
	// may keep its context) and compresses what Traffic sends.
	Compress bool

	// slow
	Slow     int // clients that write but never read
	SlowRate int // messages per second each slow client tries to write

	// pubsub (N is the number of subscribers; Rate, Hold and Conns serve
	// the idle and connect measures as in those modes)
	Measure Measure // what to measure; defaults to MeasureMax
	Channel string  // the channel every subscriber joins; defaults to "bench"
	// Publish is where publications come from: PublishClient (default)
	// or PublishAPI.
	Publish string
	// URLs spreads pubsub's subscribers over several servers, such as
	// the nodes of a cluster: subscriber i dials URLs[i%len(URLs)]. URL is
	// URLs[0]. Empty: every subscriber dials URL.
	URLs []string
	// PublishURL is where pubsub's client publisher connects, and whose
	// host the default APIURL names. Defaults to URL.
	PublishURL string
	// NodePIDs are server processes (a cluster's nodes, its NATS servers)
	// whose CPU time every pubsub step reports, also per publication.
	NodePIDs []int
	// APIURL is the HTTP API publish endpoint; defaults to /api/publish on
	// URL's host (http for ws, https for wss).
	APIURL string
	// APIKey, when set, is sent in the X-API-Key header of API requests.
	APIKey string
	// PublishWindow is the most publish commands a client publisher keeps
	// waiting for their replies; more wait (the publisher falls behind
	// rather than flood a server that queues commands), at most
	// DialTimeout for a reply. Defaults to 32. The API publisher always
	// waits for each answer.
	PublishWindow int
	// Deliveries is the offered rate in deliveries per second (publications
	// per second × subscribers): the fixed rate of MeasureRate (default
	// 50,000) and the first step of MeasureMax (default 10,000).
	Deliveries float64
	// Growth is the factor between MeasureMax steps until one fails, after
	// which the search bisects. Defaults to 2.
	Growth float64
	// Precision ends a MeasureMax search when the lowest failing rate is
	// within this fraction above the highest passing one. Defaults to 0.1.
	Precision float64
	// MaxSteps bounds the measured MeasureMax steps. Defaults to 12.
	MaxSteps int
	// MaxLag is the highest p99 publish-to-receive latency with which a
	// step still counts as keeping up. Defaults to 1s.
	MaxLag time.Duration

	// SrcIPs spreads connections over source addresses 127.0.0.2 …
	// 127.0.0.(1+SrcIPs) when the server is on an IPv4 loopback address, so
	// that no source address runs out of ports. 0 picks enough addresses
	// that each holds fewer than 24,000 connections (connect: 4); a
	// negative value binds no source address.
	SrcIPs int
	// PID of the server process: its RSS (idle, slow) and CPU time (echo,
	// slow) are read from /proc. 0 skips it.
	PID int
	// DialTimeout bounds each dial and opening handshake (pubsub: also the
	// connect and subscribe replies, and the wait for a publish reply).
	DialTimeout time.Duration
	// TLSConfig is the client's TLS configuration for wss:// URLs; nil
	// means the system's roots.
	TLSConfig *tls.Config
	// Progress, when set, receives a live status line every second
	// (carriage-return terminated, for a terminal).
	Progress io.Writer
}

// Defaults fills in the zero fields of c with the defaults of c.Mode.
func (c *Config) Defaults() {
	if c.Conns <= 0 {
		switch c.Mode {
		case ModeConnect:
			c.Conns = 64
		default:
			c.Conns = 100
		}
	}
	if c.Inflight <= 0 {
		c.Inflight = 1
	}
	if c.Size <= 0 {
		c.Size = 64
	}
	if c.Mode == ModePubSub && c.Measure == "" {
		c.Measure = MeasureMax
	}
	pubsubIdle := c.Mode == ModePubSub && c.Measure == MeasureIdle
	if c.Duration == 0 && c.Count == 0 && c.Mode != ModeIdle && !pubsubIdle {
		c.Duration = 10 * time.Second
		if c.Mode == ModePubSub && c.Measure == MeasureMax {
			c.Duration = 5 * time.Second // per step
		}
	}
	if c.N <= 0 {
		c.N = 1000
	}
	if c.Fragments <= 0 {
		c.Fragments = 4
	}
	if c.Hold <= 0 {
		c.Hold = 10 * time.Second
	}
	if c.SlowRate <= 0 {
		c.SlowRate = 1000
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if (c.Mode == ModeIdle || pubsubIdle) && c.Rate == 0 {
		c.Rate = 5000
	}
	if c.Mode == ModePubSub {
		c.pubsubDefaults()
	}
	if c.SrcIPs == 0 {
		switch {
		case c.Mode == ModeIdle:
			c.SrcIPs = srcIPsFor(c.N)
		case c.Mode == ModeConnect, c.Mode == ModePubSub && c.Measure == MeasureConnect:
			c.SrcIPs = 4
		case c.Mode == ModePubSub:
			c.SrcIPs = srcIPsFor(c.N + 1)
		default:
			c.SrcIPs = srcIPsFor(c.Conns + c.Slow)
		}
	}
}

// ErrUsage marks configuration errors: the run did not start.
var ErrUsage = errors.New("loadtest: invalid configuration")

// Validate reports configuration mistakes before anything is dialed.
func (c *Config) Validate() error {
	switch c.Mode {
	case ModeEcho, ModeIdle, ModeConnect, ModeSlow:
	case ModePubSub:
		if err := c.validatePubSub(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown mode %q (want echo, idle, connect, slow or pubsub)", ErrUsage, c.Mode)
	}
	u, err := url.Parse(c.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%w: bad URL %q: want ws://host:port/path", ErrUsage, c.URL)
	}
	if c.Raw {
		if c.Mode != ModeEcho {
			return fmt.Errorf("%w: -raw only works with echo", ErrUsage)
		}
	} else if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("%w: URL scheme %q: want ws or wss", ErrUsage, u.Scheme)
	}
	if c.Mode == ModeEcho || c.Mode == ModeSlow {
		if min := minPayload(c.Binary); c.Size < min && !c.Raw {
			return fmt.Errorf("%w: -size %d is too small: %s messages carry a %d-byte sequence number and timestamp", ErrUsage, c.Size, typeName(c.Binary), min)
		}
	}
	if c.Mode == ModeSlow && c.Slow <= 0 {
		return fmt.Errorf("%w: slow mode needs -slow K > 0", ErrUsage)
	}
	if c.Count < 0 || c.Duration < 0 || c.Warmup < 0 || c.Rate < 0 {
		return fmt.Errorf("%w: negative -count, -duration, -warmup or -rate", ErrUsage)
	}
	return nil
}

func typeName(binary bool) string {
	if binary {
		return "binary"
	}
	return "text"
}

// Run performs one run. It returns an error only when the run could not
// start (see ErrUsage); failures during the run (refused dials, dropped
// connections, bad replies) are counted in the Report. When ctx is
// cancelled the run stops early and the Report covers what was measured so
// far, with Interrupted set.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rep := newReport(&cfg)
	var err error
	switch {
	case cfg.Raw:
		err = runRaw(ctx, &cfg, rep)
	case cfg.Mode == ModeEcho, cfg.Mode == ModeSlow:
		err = runEcho(ctx, &cfg, rep)
	case cfg.Mode == ModeIdle:
		err = runIdle(ctx, &cfg, rep)
	case cfg.Mode == ModeConnect:
		err = runConnect(ctx, &cfg, rep)
	case cfg.Mode == ModePubSub:
		err = runPubSub(ctx, &cfg, rep)
	}
	if err != nil {
		return nil, err
	}
	rep.Interrupted = ctx.Err() != nil
	rep.finish()
	return rep, nil
}
