package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate"
)

// The pubsub mode drives a server that speaks Centrifugo's client protocol
// (Centrifugo itself, wsgate's hub, and the baselines in bench/servers):
// N subscribers connect and subscribe to one channel, and a publisher
// sends publications to it, either as a publish command from its own
// connection or through the HTTP API. Each publication's data carries a
// sequence number and its send time, so every subscriber checks that it
// got each publication exactly once and in order, and the latency from
// publish to receive goes into an HDR histogram.
//
// A step publishes open-loop at a fixed rate for a while, then waits for
// the deliveries to drain. It passes when nothing was lost, duplicated or
// reordered, no subscriber was disconnected, every publish was accepted and
// the p99 latency stayed within MaxLag (a server that falls behind shows a
// latency that grows for as long as the step lasts). MeasureMax doubles the
// rate until a step fails, or passes with a publisher that could not keep
// to the rate, then bisects between the highest rate that held and the
// lowest that did not, and reports the passing step with the most
// deliveries per second; subscribers that a failed step cost are
// reconnected before the next one.

const (
	stepPause    = 300 * time.Millisecond // between steps, for the server to settle
	drainQuiet   = time.Second            // a drain ends after this long without a delivery…
	drainMax     = 60 * time.Second       // …or after this long in total
	pubQueueLen  = 1 << 16                // the client publisher's send queue, in messages
	subReadLimit = 16 << 20               // largest server frame accepted
	// minStepPubs is the fewest publications a step sends: at low rates
	// (10,000 subscribers at 25,000 deliveries/s is 2.5 publications a
	// second) the step lasts longer rather than measure one burst.
	minStepPubs = 10
)

func (c *Config) pubsubDefaults() {
	if c.Channel == "" {
		c.Channel = "bench"
	}
	if c.Publish == "" {
		c.Publish = PublishClient
	}
	if c.PublishURL == "" {
		c.PublishURL = c.URL
	}
	if c.APIURL == "" {
		if u, err := apiURLFor(c.PublishURL); err == nil {
			c.APIURL = u
		}
	}
	if c.Deliveries <= 0 {
		c.Deliveries = 50000
		if c.Measure == MeasureMax {
			c.Deliveries = 10000
		}
	}
	if c.Growth <= 1 {
		c.Growth = 2
	}
	if c.Precision <= 0 {
		c.Precision = 0.1
	}
	if c.MaxSteps <= 0 {
		c.MaxSteps = 12
	}
	if c.MaxLag <= 0 {
		c.MaxLag = time.Second
	}
	if c.PublishWindow <= 0 {
		c.PublishWindow = 32
	}
}

func (c *Config) validatePubSub() error {
	switch c.Measure {
	case MeasureMax, MeasureRate, MeasureIdle, MeasureConnect:
	default:
		return fmt.Errorf("%w: unknown -measure %q (want max, rate, idle or connect)", ErrUsage, c.Measure)
	}
	switch c.Publish {
	case PublishClient:
	case PublishAPI:
		if u, err := url.Parse(c.APIURL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("%w: bad -api-url %q: want http://host:port/api/publish", ErrUsage, c.APIURL)
		}
	default:
		return fmt.Errorf("%w: unknown -publish %q (want client or api)", ErrUsage, c.Publish)
	}
	if c.Size < pubMinSize {
		return fmt.Errorf("%w: -size %d is too small: publication data carries a %d-byte sequence number and timestamp", ErrUsage, c.Size, pubMinSize)
	}
	if c.Count > 0 && c.Measure != MeasureConnect {
		return fmt.Errorf("%w: -count only works with -measure connect", ErrUsage)
	}
	for _, s := range append(slices.Clone(c.URLs), c.PublishURL) {
		if u, err := url.Parse(s); s != "" && (err != nil || u.Host == "" || (u.Scheme != "ws" && u.Scheme != "wss")) {
			return fmt.Errorf("%w: bad URL %q: want ws://host:port/path", ErrUsage, s)
		}
	}
	if c.Channel == "" || bytes.ContainsAny([]byte(c.Channel), "\"\\\n") {
		return fmt.Errorf("%w: bad -channel %q", ErrUsage, c.Channel)
	}
	return nil
}

// PubSubReport describes a pubsub run.
type PubSubReport struct {
	Measure     Measure `json:"measure"`
	Channel     string  `json:"channel"`
	Publish     string  `json:"publish,omitempty"`
	Subscribers int     `json:"subscribers"`
	MaxLagMS    float64 `json:"max_lag_ms,omitempty"`
	// Best is the index in Steps of the step the report's figures come
	// from: the best passing step (max) or the measured step (rate); -1
	// when there is none.
	Best  int          `json:"best"`
	Steps []PubSubStep `json:"steps,omitempty"`
	// Late counts publications that arrived after their step had ended.
	Late uint64 `json:"late,omitempty"`
	// Reconnected counts subscribers reconnected after a failed step, and
	// PublisherReconnected client publishers (a server may disconnect one
	// that publishes faster than it allows).
	Reconnected          uint64 `json:"reconnected,omitempty"`
	PublisherReconnected uint64 `json:"publisher_reconnected,omitempty"`
}

// PubSubStep is one rate tried: publications at a fixed rate for a while,
// then a drain.
type PubSubStep struct {
	Warmup bool `json:"warmup,omitempty"`
	// OfferedPerSec is the rate asked for, in deliveries per second.
	OfferedPerSec float64 `json:"offered_per_sec"`
	Subscribers   int     `json:"subscribers"`
	Publications  uint64  `json:"publications"`
	// PublishedPerSec is the publication rate the publisher achieved.
	PublishedPerSec float64 `json:"published_per_sec"`
	Expected        uint64  `json:"expected"`
	Delivered       uint64  `json:"delivered"`
	Lost            uint64  `json:"lost"`
	Duplicated      uint64  `json:"duplicated"`
	Reordered       uint64  `json:"reordered"`
	Disconnected    int     `json:"disconnected"`
	// Frames counts the WebSocket messages the subscribers received during
	// the step: fewer than Delivered when the server coalesces.
	Frames uint64 `json:"frames"`
	// DisconnectReasons counts how the disconnected subscribers ended.
	DisconnectReasons map[string]int `json:"disconnect_reasons,omitempty"`
	PublishErrors     uint64         `json:"publish_errors"`
	// Seconds runs from the first publish to the last delivery, plus one
	// publication interval; DeliveriesPerSec is Delivered / Seconds.
	Seconds          float64  `json:"seconds"`
	DeliveriesPerSec float64  `json:"deliveries_per_sec"`
	Latency          *Latency `json:"latency_us,omitempty"`
	ServerCPU        float64  `json:"server_cpu_percent,omitempty"`
	GeneratorCPU     float64  `json:"generator_cpu_percent,omitempty"`
	// Nodes is the CPU the processes of Config.NodePIDs used in the step.
	Nodes []NodeCPU `json:"nodes,omitempty"`
	// Pass says the step was lossless and kept its p99 within MaxLag;
	// Failure says why not.
	Pass    bool   `json:"pass"`
	Failure string `json:"failure,omitempty"`
	// Behind, when set, says the publisher did not keep to the offered
	// rate (the server pushed back, or the generator was busy): the step
	// may still pass, but the search takes its rate as out of reach.
	Behind string `json:"behind,omitempty"`
}

// NodeCPU is the CPU time a server process used during a pubsub step.
type NodeCPU struct {
	PID int `json:"pid"`
	// CPUPercent is the share of one core it used, over the step.
	CPUPercent float64 `json:"cpu_percent"`
	// PerPublicationUS is its CPU time per publication of the step, in
	// microseconds (at the 10 ms resolution of /proc: publish a few
	// hundred times more publications than that for a precise figure).
	PerPublicationUS float64 `json:"cpu_us_per_publication"`
}

// nodeMeters measures the CPU time of a cluster's processes, step by step.
type nodeMeters struct {
	procs []*proc
	start []cpuMeter
}

func openNodes(pids []int) (*nodeMeters, error) {
	n := &nodeMeters{}
	for _, pid := range pids {
		p, err := openProcess(pid)
		if err != nil {
			n.close()
			return nil, fmt.Errorf("%w: -node-pids: %w", ErrUsage, err)
		}
		n.procs = append(n.procs, p)
	}
	return n, nil
}

func (n *nodeMeters) close() {
	for _, p := range n.procs {
		p.close()
	}
}

// restart begins a step.
func (n *nodeMeters) restart() {
	n.start = n.start[:0]
	for _, p := range n.procs {
		n.start = append(n.start, startCPU(p))
	}
}

// report ends a step that sent pubs publications.
func (n *nodeMeters) report(pubs uint64) []NodeCPU {
	out := make([]NodeCPU, 0, len(n.procs))
	for i, p := range n.procs {
		m := n.start[i]
		nc := NodeCPU{PID: p.pid, CPUPercent: m.percent()}
		if t, err := p.cpu(); err == nil && m.ok && pubs > 0 {
			nc.PerPublicationUS = float64((t - m.start).Microseconds()) / float64(pubs)
		}
		out = append(out, nc)
	}
	return out
}

// setupError is a subscriber or publisher that could not connect or
// subscribe; kind names the reason in the report.
type setupError struct {
	kind string
	err  error
}

func (e *setupError) Error() string {
	if e.err == nil {
		return e.kind
	}
	return e.kind + ": " + e.err.Error()
}

func (e *setupError) Unwrap() error { return e.err }

// pubsubRun is the shared state of a pubsub run.
type pubsubRun struct {
	cfg        *Config
	base       time.Time
	d          *dialer
	errs       *errorCounter
	cc         connCounter
	channel    []byte
	connectCmd []byte
	subCmd     []byte
	ignored    atomic.Uint64
	closing    atomic.Bool
	delivered  atomic.Uint64 // first copies in the current step, for the drain
	subscribed atomic.Int64  // subscribers whose subscribe was answered and that are still open
	subs       []*subscriber
	nodes      *nodeMeters // Config.NodePIDs; nil without
	pub        *publisher  // nil until connected
	nextSeq    uint32
}

func (r *pubsubRun) now() int64 { return int64(time.Since(r.base)) }

func newPubSubRun(cfg *Config) (*pubsubRun, error) {
	d, err := newDialer(cfg.URL, cfg.SrcIPs)
	if err != nil {
		return nil, err
	}
	return &pubsubRun{
		cfg:        cfg,
		base:       time.Now(),
		d:          d,
		errs:       newErrorCounter(),
		channel:    []byte(cfg.Channel),
		connectCmd: connectCommand(),
		subCmd:     subscribeCommand(cfg.Channel),
	}, nil
}

// subscriber is one subscribed connection. onMessage runs on the
// connection's event loop, the rest on the run's goroutines; mu orders
// them.
type subscriber struct {
	run *pubsubRun
	id  int

	mu         sync.Mutex
	conn       *wsgate.Conn
	ready      chan error // gets the outcome of connect + subscribe, once
	readySent  bool
	subscribed bool
	dead       bool
	closeErr   error
	pong       bool // the server asked for pongs
	lines      lineReader
	line       serverLine

	// The current step: publications lo … lo+n-1.
	lo, n  uint32
	seen   []uint64 // bitmap of the step's publications received
	maxSeq int64    // highest sequence number received in the step, -1 before
	got    uint64   // first copies
	frames uint64   // WebSocket messages
	dup    uint64
	reord  uint64
	lastAt int64 // when the last first copy arrived
	shard  *latencyShard
	late   uint64 // publications of an earlier step (whole run)
}

func (s *subscriber) alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subscribed && !s.dead
}

// signalLocked reports the outcome of connect + subscribe, once.
func (s *subscriber) signalLocked(err error) {
	if s.readySent || s.ready == nil {
		return
	}
	s.readySent = true
	s.ready <- err
}

func (s *subscriber) onMessage(c *wsgate.Conn, _ wsgate.MessageType, data []byte) {
	r := s.run
	now := r.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames++
	s.lines.reset(data)
	for {
		err := s.lines.next(&s.line)
		if err == io.EOF {
			return
		}
		if err != nil {
			r.errs.add("subscriber: malformed reply", err)
			return
		}
		l := &s.line
		switch l.kind {
		case replyPublication:
			seq, ts, ok := unstampPub(l.data)
			if !ok || !bytes.Equal(l.channel, r.channel) {
				r.ignored.Add(1)
				continue
			}
			s.deliverLocked(seq, ts, now)
		case replyPing:
			if s.pong {
				c.Write(context.Background(), wsgate.TextMessage, pongFrame)
			}
		case replyResult:
			s.resultLocked(c, l)
		default:
			r.ignored.Add(1)
		}
	}
}

// resultLocked handles the replies to connect and subscribe.
func (s *subscriber) resultLocked(c *wsgate.Conn, l *serverLine) {
	r := s.run
	switch l.id {
	case connectID:
		if l.err != nil {
			s.signalLocked(&setupError{"connect: " + protoError(l.err), nil})
			return
		}
		s.pong = l.pong
		if err := c.Write(context.Background(), wsgate.TextMessage, r.subCmd); err != nil {
			s.signalLocked(&setupError{writeErrorKind(err), err})
		}
	case subscribeID:
		if l.err != nil {
			s.signalLocked(&setupError{"subscribe: " + protoError(l.err), nil})
			return
		}
		if !s.subscribed && !s.dead {
			s.subscribed = true
			r.subscribed.Add(1)
		}
		s.signalLocked(nil)
	default:
		r.ignored.Add(1)
	}
}

// deliverLocked records one publication.
func (s *subscriber) deliverLocked(seq uint32, ts, now int64) {
	off := seq - s.lo // wraps for an earlier step's publication
	if off >= s.n {
		s.late++
		return
	}
	w, bit := off/64, uint64(1)<<(off%64)
	if s.seen[w]&bit != 0 {
		s.dup++
		return
	}
	s.seen[w] |= bit
	if int64(seq) < s.maxSeq {
		s.reord++
	} else {
		s.maxSeq = int64(seq)
	}
	s.got++
	s.lastAt = now
	s.shard.record(now - ts)
	s.run.delivered.Add(1)
}

func (s *subscriber) onClose(_ *wsgate.Conn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.dead && s.subscribed {
		s.run.subscribed.Add(-1)
	}
	s.dead = true
	s.closeErr = err
	s.signalLocked(&setupError{closeErrorKind(err), err})
}

// beginStep makes the subscriber count publications lo … lo+n-1.
func (s *subscriber) beginStep(lo, n uint32, lat *latencies) {
	s.mu.Lock()
	defer s.mu.Unlock()
	words := int(n+63) / 64
	if cap(s.seen) >= words {
		s.seen = s.seen[:words]
		clear(s.seen)
	} else {
		s.seen = make([]uint64, words)
	}
	s.lo, s.n = lo, n
	s.maxSeq = -1
	s.got, s.frames, s.dup, s.reord, s.lastAt = 0, 0, 0, 0, 0
	s.shard = lat.shard(s.id)
}

// open dials the subscriber, connects and subscribes, and waits for the
// subscribe reply. It reports whether dialing should go on (see
// dialFailed); a failure is counted in r.errs.
func (r *pubsubRun) open(ctx context.Context, s *subscriber) bool {
	s.mu.Lock()
	s.ready = make(chan error, 1)
	s.readySent, s.subscribed, s.dead, s.closeErr, s.pong = false, false, false, nil, false
	s.mu.Unlock()
	r.cc.attempted.Add(1)
	target := r.cfg.URL
	if n := len(r.cfg.URLs); n > 0 {
		target = r.cfg.URLs[s.id%n]
	}
	c, err := wsgate.Dial(ctx, target, &wsgate.Options{
		OnMessage:        s.onMessage,
		OnClose:          s.onClose,
		PingInterval:     -1,
		NetDialContext:   r.d.dialContext,
		TLSConfig:        r.cfg.TLSConfig,
		HandshakeTimeout: r.cfg.DialTimeout,
		ReadLimit:        subReadLimit, // a coalesced frame may hold many publications
	})
	if err != nil {
		return dialFailed(ctx, r.errs, err)
	}
	r.cc.established.Add(1)
	s.mu.Lock()
	s.conn = c
	s.mu.Unlock()
	if err := c.Write(ctx, wsgate.TextMessage, r.connectCmd); err != nil {
		r.errs.add(writeErrorKind(err), err)
		c.CloseNow()
		return true
	}
	t := time.NewTimer(r.cfg.DialTimeout)
	defer t.Stop()
	select {
	case err = <-s.ready:
	case <-t.C:
		err = &setupError{fmt.Sprintf("subscribe: no reply within %v", r.cfg.DialTimeout), nil}
	case <-ctx.Done():
		c.CloseNow()
		return false
	}
	if err != nil {
		var se *setupError
		kind := "subscribe: failed"
		if errors.As(err, &se) {
			kind = se.kind
		}
		r.errs.add(kind, err)
		c.CloseNow()
	}
	return true
}

// openAll opens the subscribers in subs, rate per second at most (0: no
// limit), 64 at a time.
func (r *pubsubRun) openAll(ctx context.Context, subs []*subscriber, rate float64) {
	ramp(ctx, len(subs), rate, 64, func(i int) bool { return r.open(ctx, subs[i]) })
}

// aliveSubs returns the subscribers that are subscribed and open.
func (r *pubsubRun) aliveSubs() []*subscriber {
	var out []*subscriber
	for _, s := range r.subs {
		if s.alive() {
			out = append(out, s)
		}
	}
	return out
}

// closeSubs closes every subscriber's connection.
func (r *pubsubRun) closeSubs() {
	r.closing.Store(true)
	conns := make([]*wsgate.Conn, 0, len(r.subs))
	for _, s := range r.subs {
		s.mu.Lock()
		conns = append(conns, s.conn)
		s.mu.Unlock()
	}
	closeAll(conns, 10*time.Second)
}

// publisher sends the publications, from a connected client or through
// the HTTP API.
type publisher struct {
	run    *pubsubRun
	buf    []byte
	api    *apiPublisher
	conn   *wsgate.Conn
	nextID uint32
	failed atomic.Uint64 // publishes refused or failed
	// window holds a token per publish command awaiting its reply: a
	// client publisher keeps at most PublishWindow of them in flight.
	window chan struct{}

	mu        sync.Mutex // orders onMessage with connect
	ready     chan error
	readySent bool
	pong      bool
	lines     lineReader
	line      serverLine
}

// newPublisher connects the publisher (client mode) or prepares the HTTP
// client (API mode).
func (r *pubsubRun) newPublisher(ctx context.Context) (*publisher, error) {
	p := &publisher{
		run: r, buf: newPubData(r.cfg.Size), nextID: firstPublishID, ready: make(chan error, 1),
		window: make(chan struct{}, r.cfg.PublishWindow),
	}
	if r.cfg.Publish == PublishAPI {
		p.api = newAPIPublisher(r.cfg, r.d)
		return p, nil
	}
	r.cc.attempted.Add(1)
	c, err := wsgate.Dial(ctx, r.cfg.PublishURL, &wsgate.Options{
		OnMessage:         p.onMessage,
		OnClose:           p.onClose,
		PingInterval:      -1,
		NetDialContext:    r.d.dialContext,
		TLSConfig:         r.cfg.TLSConfig,
		HandshakeTimeout:  r.cfg.DialTimeout,
		SendQueueMessages: pubQueueLen,
		SendQueueBytes:    pubQueueLen * (r.cfg.Size + 64),
		SendQueuePolicy:   wsgate.PolicyBlock,
		ReadLimit:         subReadLimit,
	})
	if err != nil {
		dialFailed(ctx, r.errs, err)
		return nil, fmt.Errorf("publisher: %w", err)
	}
	r.cc.established.Add(1)
	p.conn = c
	if err := c.Write(ctx, wsgate.TextMessage, r.connectCmd); err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("publisher: %w", err)
	}
	t := time.NewTimer(r.cfg.DialTimeout)
	defer t.Stop()
	select {
	case err = <-p.ready:
	case <-t.C:
		err = &setupError{fmt.Sprintf("publisher: no connect reply within %v", r.cfg.DialTimeout), nil}
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	return p, nil
}

func (p *publisher) signalLocked(err error) {
	if !p.readySent {
		p.readySent = true
		p.ready <- err
	}
}

func (p *publisher) onMessage(c *wsgate.Conn, _ wsgate.MessageType, data []byte) {
	r := p.run
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines.reset(data)
	for {
		err := p.lines.next(&p.line)
		if err == io.EOF {
			return
		}
		if err != nil {
			r.errs.add("publisher: malformed reply", err)
			return
		}
		l := &p.line
		switch {
		case l.kind == replyPing:
			if p.pong {
				c.Write(context.Background(), wsgate.TextMessage, pongFrame)
			}
		case l.kind == replyResult && l.id == connectID:
			if l.err != nil {
				p.signalLocked(&setupError{"publisher: connect: " + protoError(l.err), nil})
				continue
			}
			p.pong = l.pong
			p.signalLocked(nil)
		case l.kind == replyResult && l.id >= firstPublishID:
			select {
			case <-p.window:
			default:
			}
			if l.err != nil {
				p.failed.Add(1)
				r.errs.add("publish: "+protoError(l.err), nil)
			}
		default:
			r.ignored.Add(1)
		}
	}
}

func (p *publisher) onClose(_ *wsgate.Conn, err error) {
	p.mu.Lock()
	p.signalLocked(&setupError{"publisher: " + closeErrorKind(err), err})
	p.mu.Unlock()
	if !p.run.closing.Load() {
		p.run.errs.add("publisher: "+closeErrorKind(err), err)
	}
}

// publish sends publication seq.
func (p *publisher) publish(ctx context.Context, seq uint32) error {
	stampPub(p.buf, seq, p.run.now())
	if p.api != nil {
		if err := p.api.publish(ctx, p.buf); err != nil {
			p.failed.Add(1)
			if ctx.Err() == nil {
				p.run.errs.add("publish: API", err)
			}
			return err
		}
		return nil
	}
	select {
	case p.window <- struct{}{}:
	default:
		// The window is full: wait for a reply, but not forever.
		t := time.NewTimer(p.run.cfg.DialTimeout)
		defer t.Stop()
		select {
		case p.window <- struct{}{}:
		case <-p.conn.Done():
			p.failed.Add(1)
			return p.conn.Err()
		case <-t.C:
			p.failed.Add(1)
			err := fmt.Errorf("%d publishes unanswered for %v", cap(p.window), p.run.cfg.DialTimeout)
			p.run.errs.add("publish: no reply", err)
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	cmd := publishCommand(p.nextID, p.run.cfg.Channel, p.buf)
	p.nextID++
	if err := p.conn.Write(ctx, wsgate.TextMessage, cmd); err != nil {
		p.failed.Add(1)
		if ctx.Err() == nil {
			p.run.errs.add("publish: "+writeErrorKind(err), err)
		}
		return err
	}
	return nil
}

// publishOpenLoop sends publications lo … lo+n-1 at rate per second,
// each when it is due (late ones at once), and returns how many went out.
func (p *publisher) publishOpenLoop(ctx context.Context, lo uint32, n int, rate float64) int {
	start := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := 0; i < n; {
		due := min(n, int(time.Since(start).Seconds()*rate)+1)
		for ; i < due; i++ {
			if p.publish(ctx, lo+uint32(i)) != nil {
				return i
			}
		}
		if i >= n {
			break
		}
		next := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		timer.Reset(time.Until(next))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return i
		}
	}
	return n
}

func (p *publisher) close() {
	if p.api != nil {
		p.api.close()
	}
	if p.conn != nil {
		p.conn.Close()
		select {
		case <-p.conn.Done():
		case <-time.After(5 * time.Second):
			p.conn.CloseNow()
			<-p.conn.Done()
		}
	}
}

// step publishes at offered deliveries per second for d, waits for the
// deliveries to drain and returns what happened.
func (r *pubsubRun) step(ctx context.Context, offered float64, d time.Duration, srv *procWatch) PubSubStep {
	alive := r.aliveSubs()
	st := PubSubStep{OfferedPerSec: offered, Subscribers: len(alive)}
	p := r.pub
	switch {
	case len(alive) == 0:
		st.Failure = "no subscriber left"
		return st
	case p == nil:
		st.Failure = "no publisher"
		return st
	}
	pubRate := offered / float64(len(alive))
	n := max(minStepPubs, int(math.Round(pubRate*d.Seconds())))
	lo := r.nextSeq
	r.nextSeq += uint32(n)
	lat := newLatencies()
	for _, s := range alive {
		s.beginStep(lo, uint32(n), lat)
	}
	r.delivered.Store(0)
	failedBefore := p.failed.Load()
	srv.restartCPU()
	if r.nodes != nil {
		r.nodes.restart()
	}
	self := startSelf()

	first := r.now()
	sent := p.publishOpenLoop(ctx, lo, n, pubRate)
	pubSeconds := time.Duration(r.now() - first).Seconds()
	r.drain(ctx, uint64(sent)*uint64(len(alive)))

	if srv != nil {
		st.ServerCPU = srv.cpu.percent()
	}
	st.GeneratorCPU = self.stop().CPUPercent
	st.Publications = uint64(sent)
	if r.nodes != nil {
		st.Nodes = r.nodes.report(st.Publications)
	}
	// Like Seconds: n publications on schedule take n/pubRate seconds.
	pubWindow := pubSeconds + 1/pubRate
	st.PublishedPerSec = float64(sent) / pubWindow
	st.PublishErrors = p.failed.Load() - failedBefore
	var last int64
	for _, s := range alive {
		s.mu.Lock()
		st.Delivered += s.got
		st.Frames += s.frames
		st.Lost += uint64(sent) - min(s.got, uint64(sent))
		st.Duplicated += s.dup
		st.Reordered += s.reord
		last = max(last, s.lastAt)
		if s.dead {
			st.Disconnected++
			if st.DisconnectReasons == nil {
				st.DisconnectReasons = map[string]int{}
			}
			st.DisconnectReasons[closeErrorKind(s.closeErr)]++
		}
		s.n = 0 // later arrivals are late
		s.mu.Unlock()
	}
	st.Expected = uint64(sent) * uint64(len(alive))
	if last > first {
		// n publications at pubRate take n/pubRate seconds to send: count
		// from the first publish to the last delivery, plus one interval.
		st.Seconds = time.Duration(last-first).Seconds() + 1/pubRate
		st.DeliveriesPerSec = float64(st.Delivered) / st.Seconds
	}
	st.Latency = summarize(lat.merged())
	st.Failure = r.judge(ctx, &st, n)
	if p.conn != nil {
		select {
		case <-p.conn.Done():
			st.Failure = "the publisher was disconnected (" + closeErrorKind(p.conn.Err()) + ")"
		default:
		}
	}
	st.Pass = st.Failure == ""
	if pubWindow > 1.1*float64(n)/pubRate+0.1 {
		// More than 10 % (and 100 ms) late.
		st.Behind = fmt.Sprintf("the publisher fell behind (%.0f of %.0f publications/s)", st.PublishedPerSec, pubRate)
	}
	return st
}

// judge returns why a step failed, or "" when it passed.
func (r *pubsubRun) judge(ctx context.Context, st *PubSubStep, planned int) string {
	switch {
	case ctx.Err() != nil:
		return "interrupted"
	case st.PublishErrors > 0:
		return fmt.Sprintf("%s publishes failed", group(st.PublishErrors))
	case st.Disconnected > 0:
		return fmt.Sprintf("%d subscribers disconnected", st.Disconnected)
	case st.Lost > 0:
		return fmt.Sprintf("%s deliveries lost", group(st.Lost))
	case st.Duplicated > 0:
		return fmt.Sprintf("%s deliveries duplicated", group(st.Duplicated))
	case st.Reordered > 0:
		return fmt.Sprintf("%s deliveries out of order", group(st.Reordered))
	case int(st.Publications) < planned:
		return "the publisher stopped early"
	case st.Latency != nil && st.Latency.P99 > float64(r.cfg.MaxLag.Microseconds()):
		return fmt.Sprintf("p99 %s above -max-lag %v: the server fell behind", fmtUS(st.Latency.P99), r.cfg.MaxLag)
	}
	return ""
}

// drain waits until want deliveries of the step arrived, or none arrived
// for drainQuiet, or drainMax passed.
func (r *pubsubRun) drain(ctx context.Context, want uint64) {
	start := time.Now()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	last, lastChange := r.delivered.Load(), time.Now()
	for {
		got := r.delivered.Load()
		if got >= want || ctx.Err() != nil || time.Since(start) > drainMax {
			return
		}
		if got != last {
			last, lastChange = got, time.Now()
		} else if time.Since(lastChange) > max(drainQuiet, r.cfg.MaxLag) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
		}
	}
}

// repair reconnects the subscribers a failed step cost.
func (r *pubsubRun) repair(ctx context.Context, rep *PubSubReport) {
	var dead []*subscriber
	for _, s := range r.subs {
		s.mu.Lock()
		wasUp := s.conn != nil && s.dead
		s.mu.Unlock()
		if wasUp {
			dead = append(dead, s)
		}
	}
	if len(dead) == 0 {
		return
	}
	r.openAll(ctx, dead, 0)
	for _, s := range dead {
		if s.alive() {
			rep.Reconnected++
		}
	}
}

// ensurePublisher connects the publisher, or reconnects a client publisher
// the server disconnected; it reports whether there is one.
func (r *pubsubRun) ensurePublisher(ctx context.Context, rep *PubSubReport) bool {
	if p := r.pub; p != nil {
		if p.api != nil {
			return true
		}
		select {
		case <-p.conn.Done():
			p.close()
			r.pub = nil
			rep.PublisherReconnected++
		default:
			return true
		}
	}
	p, err := r.newPublisher(ctx)
	if err != nil {
		var se *setupError
		if errors.As(err, &se) {
			r.errs.add(se.kind, err)
		}
		return false
	}
	r.pub = p
	return true
}

// search runs the steps of MeasureMax and returns the index of the best
// passing step, or -1.
func (r *pubsubRun) search(ctx context.Context, srv *procWatch, rep *PubSubReport, progress *atomic.Pointer[string]) int {
	return searchMax(ctx, r.cfg, rep, func(i int, rate float64) PubSubStep {
		if i > 0 {
			sleepCtx(ctx, stepPause)
		}
		r.repair(ctx, rep)
		r.ensurePublisher(ctx, rep)
		msg := fmt.Sprintf("pubsub max  step %d: %s deliveries/s offered", i+1, group(uint64(rate)))
		progress.Store(&msg)
		return r.step(ctx, rate, r.cfg.Duration, srv)
	})
}

// searchMax is the search of MeasureMax: try(i, rate) runs step i at an
// offered rate. The rate grows by cfg.Growth until a step fails or passes
// behind schedule, then bisects between the highest rate that held and the
// lowest that did not. It appends the steps to rep.Steps and returns the
// index of the passing one with the most deliveries per second, or -1.
func searchMax(ctx context.Context, cfg *Config, rep *PubSubReport, try func(i int, rate float64) PubSubStep) int {
	rate := cfg.Deliveries
	var held, missed float64 // highest rate that held, lowest that did not
	best := -1
	for i := 0; i < cfg.MaxSteps && ctx.Err() == nil; i++ {
		st := try(i, rate)
		rep.Steps = append(rep.Steps, st)
		if ctx.Err() != nil {
			break
		}
		if st.Pass && (best < 0 || st.DeliveriesPerSec > rep.Steps[best].DeliveriesPerSec) {
			best = len(rep.Steps) - 1
		}
		if st.Pass && st.Behind == "" {
			held = max(held, rate)
		} else if missed == 0 || rate < missed {
			missed = rate
		}
		switch {
		case missed == 0:
			rate *= cfg.Growth
		case held == 0:
			rate /= cfg.Growth
			if rate < float64(st.Subscribers)/2 {
				return best // below a publication every 2 s: give up
			}
		case missed <= held*(1+cfg.Precision):
			return best
		default:
			rate = math.Sqrt(held * missed)
		}
	}
	return best
}

// runPubSub runs the pubsub mode.
func runPubSub(ctx context.Context, cfg *Config, rep *Report) error {
	switch cfg.Measure {
	case MeasureIdle:
		return runPubSubIdle(ctx, cfg, rep)
	case MeasureConnect:
		return runPubSubConnect(ctx, cfg, rep)
	}
	r, err := newPubSubRun(cfg)
	if err != nil {
		return err
	}
	ps := &PubSubReport{
		Measure: cfg.Measure, Channel: cfg.Channel, Publish: cfg.Publish, Subscribers: cfg.N,
		MaxLagMS: float64(cfg.MaxLag.Microseconds()) / 1e3, Best: -1,
	}
	rep.PubSub = ps
	var status atomic.Pointer[string]
	connecting := "pubsub connecting"
	status.Store(&connecting)
	if cfg.Progress != nil {
		var rm rateMeter
		stop := progressLine(cfg.Progress, func() string {
			return fmt.Sprintf("%s  subscribed %d/%d  %.0f deliveries/s  errors %d",
				*status.Load(), r.subscribed.Load(), cfg.N, rm.rate(r.delivered.Load()), r.errs.count())
		})
		defer stop()
	}

	if len(cfg.NodePIDs) > 0 {
		if r.nodes, err = openNodes(cfg.NodePIDs); err != nil {
			return err
		}
		defer r.nodes.close()
	}
	r.subs = make([]*subscriber, cfg.N)
	for i := range r.subs {
		r.subs[i] = &subscriber{run: r, id: i}
	}
	r.openAll(ctx, r.subs, 0)
	defer r.closeSubs()

	srv := watchProc(cfg.PID)
	if r.ensurePublisher(ctx, ps) && ctx.Err() == nil && r.subscribed.Load() > 0 {
		if cfg.Warmup > 0 {
			msg := "pubsub warmup"
			status.Store(&msg)
			st := r.step(ctx, cfg.Deliveries, cfg.Warmup, srv)
			st.Warmup = true
			ps.Steps = append(ps.Steps, st)
			sleepCtx(ctx, stepPause)
		}
		switch cfg.Measure {
		case MeasureMax:
			ps.Best = r.search(ctx, srv, ps, &status)
		case MeasureRate:
			r.repair(ctx, ps)
			r.ensurePublisher(ctx, ps)
			msg := "pubsub rate"
			status.Store(&msg)
			st := r.step(ctx, cfg.Deliveries, cfg.Duration, srv)
			ps.Steps = append(ps.Steps, st)
			ps.Best = len(ps.Steps) - 1
		}
	}
	srvStats, srvErr := srv.finish(false)
	r.closing.Store(true)
	if r.pub != nil {
		r.pub.close()
	}
	for _, s := range r.subs {
		s.mu.Lock()
		ps.Late += s.late
		s.mu.Unlock()
	}

	rep.Attempted, rep.Established = r.cc.attempted.Load(), r.cc.established.Load()
	rep.Ignored = r.ignored.Load()
	var published uint64
	for _, st := range ps.Steps {
		published += st.Publications
	}
	rep.ops = rep.Attempted + published
	if ps.Best >= 0 {
		best := &ps.Steps[ps.Best]
		rep.Messages, rep.Seconds, rep.Latency = best.Delivered, best.Seconds, best.Latency
		if srvStats != nil {
			srvStats.CPUPercent = best.ServerCPU
		}
		rep.Generator = &ProcStats{PID: os.Getpid(), CPUPercent: best.GeneratorCPU}
		if cfg.Measure == MeasureRate && !best.Pass {
			// A fixed rate that loses deliveries is a failed run.
			rep.ops += best.Expected
			for _, e := range []struct {
				kind string
				n    uint64
			}{
				{"pubsub: deliveries lost", best.Lost},
				{"pubsub: deliveries duplicated", best.Duplicated},
				{"pubsub: deliveries out of order", best.Reordered},
				{"pubsub: subscribers disconnected", uint64(best.Disconnected)},
			} {
				for range e.n {
					r.errs.add(e.kind, nil)
				}
			}
			rep.Notes = append(rep.Notes, "the step failed: "+best.Failure)
		}
	} else if ctx.Err() == nil {
		r.errs.add("pubsub: no step passed", nil)
	}
	rep.Errors = r.errs.list()
	rep.Server = srvStats
	if srvErr != nil {
		rep.Notes = append(rep.Notes, "server stats: "+srvErr.Error())
	}
	if g := rep.Generator; g != nil && g.CPUPercent > 90 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the generator used %.0f%% of a core in the best step: it may be the bottleneck", g.CPUPercent))
	}
	return nil
}

// runPubSubIdle ramps N subscribers and holds them: the server's RSS per
// idle subscribed connection.
func runPubSubIdle(ctx context.Context, cfg *Config, rep *Report) error {
	r, err := newPubSubRun(cfg)
	if err != nil {
		return err
	}
	rep.PubSub = &PubSubReport{Measure: cfg.Measure, Channel: cfg.Channel, Subscribers: cfg.N, Best: -1}
	if limit, ok := fdLimit(); ok && uint64(cfg.N)+64 > limit {
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"-n %d needs about %d file descriptors but this process may open %d: expect EMFILE", cfg.N, cfg.N+64, limit))
	}
	if cfg.Progress != nil {
		var rm rateMeter
		stop := progressLine(cfg.Progress, func() string {
			n := r.subscribed.Load()
			return fmt.Sprintf("pubsub idle  subscribed %d/%d  %.0f subscribes/s  errors %d", n, cfg.N, rm.rate(uint64(max(n, 0))), r.errs.count())
		})
		defer stop()
	}
	r.subs = make([]*subscriber, cfg.N)
	for i := range r.subs {
		r.subs[i] = &subscriber{run: r, id: i}
	}
	srv := watchProc(cfg.PID)
	start := time.Now()
	r.openAll(ctx, r.subs, cfg.Rate)
	rampTime := time.Since(start)
	holdStart := time.Now()
	sleepCtx(ctx, cfg.Hold)
	rep.Seconds = time.Since(holdStart).Seconds()
	held := r.subscribed.Load()
	srvStats, srvErr := srv.finish(false)
	// Subscribers that ended during the hold.
	for _, s := range r.subs {
		s.mu.Lock()
		if s.subscribed && s.dead {
			r.errs.add(closeErrorKind(s.closeErr), s.closeErr)
		}
		s.mu.Unlock()
	}
	r.closeSubs()

	rep.Attempted, rep.Established = r.cc.attempted.Load(), r.cc.established.Load()
	rep.Held = uint64(max(held, 0))
	rep.Ignored = r.ignored.Load()
	rep.ops = rep.Attempted
	rep.Errors = r.errs.list()
	rep.RampSeconds = rampTime.Seconds()
	if srvStats != nil {
		if held > 0 && srvStats.RSSAfterKiB > 0 {
			srvStats.RSSPerConnKiB = float64(srvStats.RSSAfterKiB-srvStats.RSSBeforeKiB) / float64(held)
		}
		rep.Server = srvStats
	}
	if srvErr != nil {
		rep.Notes = append(rep.Notes, "server stats: "+srvErr.Error())
	}
	if slices.ContainsFunc(rep.Errors, func(e ErrorKind) bool { return e.Kind == emfileKind }) {
		limit, _ := fdLimit()
		rep.Notes = append(rep.Notes, fmt.Sprintf(
			"the generator ran out of file descriptors after %d connections (limit %d per process): lower -n", rep.Established, limit))
	}
	return nil
}

// runPubSubConnect measures connect+subscribe cycles: dial, connect,
// subscribe, close, over and over from Conns workers.
func runPubSubConnect(ctx context.Context, cfg *Config, rep *Report) error {
	rep.PubSub = &PubSubReport{Measure: cfg.Measure, Channel: cfg.Channel, Best: -1}
	connectCmd, subCmd := connectCommand(), subscribeCommand(cfg.Channel)
	var anchorMu sync.Mutex
	var anchorLines lineReader
	var anchorLine serverLine
	anchorPong := false
	return runCycles(ctx, cfg, rep, cycleSpec{
		newCycle: func() cycleFunc {
			var lr lineReader
			var l serverLine
			return func(ctx context.Context, c *wsgate.Conn, _ uint32, errs *errorCounter) bool {
				return connectSubscribe(ctx, c, connectCmd, subCmd, &lr, &l, errs)
			}
		},
		// The anchor connects (a server may drop a connection that never
		// does) and answers pings.
		anchorHello: connectCmd,
		anchorMessage: func(c *wsgate.Conn, _ wsgate.MessageType, data []byte) {
			anchorMu.Lock()
			defer anchorMu.Unlock()
			anchorLines.reset(data)
			for anchorLines.next(&anchorLine) == nil {
				switch {
				case anchorLine.kind == replyResult && anchorLine.id == connectID:
					anchorPong = anchorLine.pong
				case anchorLine.kind == replyPing && anchorPong:
					c.Write(context.Background(), wsgate.TextMessage, pongFrame)
				}
			}
		},
	})
}

// connectSubscribe sends connect, waits for its reply, sends subscribe and
// waits for its reply, answering pings on the way.
func connectSubscribe(ctx context.Context, c *wsgate.Conn, connectCmd, subCmd []byte, lr *lineReader, l *serverLine, errs *errorCounter) bool {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pong := false
	for _, step := range []struct {
		name string
		cmd  []byte
		id   uint32
	}{{"connect", connectCmd, connectID}, {"subscribe", subCmd, subscribeID}} {
		if err := c.Write(ctx, wsgate.TextMessage, step.cmd); err != nil {
			errs.add(writeErrorKind(err), err)
			return false
		}
	wait:
		for {
			_, data, err := c.Read(rctx)
			if err != nil {
				if ctx.Err() == nil {
					if rctx.Err() != nil {
						errs.add(step.name+": no reply within 5s", err)
					} else {
						errs.add(step.name+": "+closeErrorKind(c.Err()), err)
					}
				}
				return false
			}
			lr.reset(data)
			for {
				err := lr.next(l)
				if err == io.EOF {
					break
				}
				if err != nil {
					errs.add(step.name+": malformed reply", err)
					return false
				}
				switch {
				case l.kind == replyPing && pong:
					c.Write(ctx, wsgate.TextMessage, pongFrame)
				case l.kind == replyResult && l.id == step.id:
					if l.err != nil {
						errs.add(step.name+": "+protoError(l.err), nil)
						return false
					}
					if step.id == connectID {
						pong = l.pong
					}
					break wait
				}
			}
		}
	}
	return true
}
