package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wsgate/wsgate/broker"
)

// Broker runs the broker.Broker and broker.PresenceManager contracts on
// NATS with JetStream, so that several wsgate nodes share channels,
// history and presence. It also implements broker.Closer,
// broker.HealthChecker, broker.StatsReporter and broker.NodeDirectory.
//
// All methods are safe for concurrent use once Run has returned. The
// EventHandler is called from DeliveryShards goroutines owned by the
// Broker, never under its locks; calls for one channel come from one of
// them, in offset order. A panic in the handler is recovered and logged.
// Close stops the goroutines and closes the NATS connection; it is
// idempotent.
type Broker struct {
	opts Options

	nc      *nats.Conn
	js      jetstream.JetStream
	handler broker.EventHandler

	historyStream  string // <PREFIX>_HISTORY
	presenceStream string // <PREFIX>_PRESENCE

	shards []*shard
	seed   maphash.Seed
	checks chan *positionCheck // to the checker goroutines
	trims  chan trimRequest    // to the trimmer goroutine

	pubs publishers // per-channel publish state

	nodes nodeDirectory // the other nodes' announcements (nodes.go)

	// lose, when set (by tests, before Run), makes the broker ignore a
	// received message as if the network had lost it, with no signal.
	lose func(*nats.Msg) bool

	dupWindow atomic.Int64 // the history stream's duplicate window, ns
	dupMu     sync.Mutex   // serializes widening it

	mu        sync.Mutex    // guards nc while Run and Close may race
	started   atomic.Bool   // Run was called
	running   atomic.Bool   // Run succeeded
	closing   chan struct{} // closed by Close
	closeOnce sync.Once
	ncClosed  chan struct{} // closed when the NATS connection is closed
	wg        sync.WaitGroup
}

var (
	_ broker.Broker          = (*Broker)(nil)
	_ broker.PresenceManager = (*Broker)(nil)
	_ broker.Closer          = (*Broker)(nil)
	_ broker.HealthChecker   = (*Broker)(nil)
	_ broker.StatsReporter   = (*Broker)(nil)
	_ broker.NodeDirectory   = (*Broker)(nil)
)

// New returns a Broker configured by opts. It does not connect: Run does.
func New(opts Options) (*Broker, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	upper := strings.ToUpper(o.Prefix)
	b := &Broker{
		opts:           o,
		historyStream:  upper + "_HISTORY",
		presenceStream: upper + "_PRESENCE",
		seed:           maphash.MakeSeed(),
		checks:         make(chan *positionCheck, 1024),
		trims:          make(chan trimRequest, 1024),
		closing:        make(chan struct{}),
		ncClosed:       make(chan struct{}),
	}
	b.pubs.init()
	// The shards exist before the connection, whose callbacks notify them;
	// their goroutines start when Run succeeds.
	b.shards = make([]*shard, o.DeliveryShards)
	for i := range b.shards {
		b.shards[i] = newShard(b)
	}
	return b, nil
}

// Subjects. A channel name becomes one token (see subjectToken).
func (b *Broker) historySubject(tok string) string   { return b.opts.Prefix + ".h." + tok }
func (b *Broker) fanoutSubject(tok string) string    { return b.opts.Prefix + ".c." + tok }
func (b *Broker) idemSubject(tok, key string) string { return b.opts.Prefix + ".i." + tok + "." + key }
func (b *Broker) presencePrefix(tok string) string   { return b.opts.Prefix + ".p." + tok + "." }

// Run connects to NATS, creates or updates the broker's streams and starts
// delivering to h. It returns once the broker is ready, or with an error
// when StartTimeout passes first. Deliveries stop when ctx is done or
// Close is called.
func (b *Broker) Run(ctx context.Context, h broker.EventHandler) error {
	if h == nil {
		return errors.New("natsbroker: Run: nil EventHandler")
	}
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("natsbroker: Run called twice")
	}
	select {
	case <-b.closing:
		return fmt.Errorf("natsbroker: %w", net.ErrClosed)
	default:
	}
	b.handler = h
	startCtx, cancel := context.WithTimeout(ctx, b.opts.StartTimeout)
	defer cancel()

	if err := b.connect(startCtx); err != nil {
		if b.nc == nil {
			close(b.ncClosed)
		}
		return err
	}
	js, err := jetstream.New(b.nc)
	if err != nil {
		b.nc.Close()
		return fmt.Errorf("natsbroker: %w", err)
	}
	b.js = js
	if err := b.ensureStreams(startCtx); err != nil {
		b.nc.Close()
		return err
	}
	if err := b.subscribeNodes(); err != nil {
		b.nc.Close()
		return err
	}

	for _, s := range b.shards {
		b.wg.Go(s.run)
	}
	for range 2 {
		b.wg.Go(b.runChecker)
	}
	b.wg.Go(b.runTrimmer)
	b.wg.Go(func() {
		select {
		case <-ctx.Done():
			closeCtx, cancel := context.WithTimeout(context.Background(), b.opts.RequestTimeout)
			defer cancel()
			_ = b.close(closeCtx, false)
		case <-b.closing:
		}
	})
	b.running.Store(true)
	return nil
}

// connect makes the NATS connection, retrying until ctx is done.
func (b *Broker) connect(ctx context.Context) error {
	opts := b.opts.natsOptions()
	opts = append(opts,
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.opts.Logger.Warn("natsbroker: disconnected from NATS", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.opts.Logger.Info("natsbroker: reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			for _, s := range b.shards {
				s.noteReconnect()
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
				if s := b.shardOfSub(sub); s != nil {
					s.noteDropped(sub)
					return
				}
			}
			b.opts.Logger.Warn("natsbroker: NATS error", "error", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) { close(b.ncClosed) }),
	)
	wait := 100 * time.Millisecond
	for {
		nc, err := nats.Connect(b.opts.urls(), opts...)
		if err == nil {
			b.mu.Lock()
			defer b.mu.Unlock()
			select {
			case <-b.closing:
				nc.Close()
				return fmt.Errorf("natsbroker: %w", net.ErrClosed)
			default:
			}
			b.nc = nc
			return nil
		}
		b.opts.Logger.Warn("natsbroker: connecting to NATS", "error", err)
		select {
		case <-ctx.Done():
			return unavailable(fmt.Errorf("connecting to NATS: %w (last error: %w)", ctx.Err(), err))
		case <-b.closing:
			return fmt.Errorf("natsbroker: %w", net.ErrClosed)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// ensureStreams creates the history and presence streams, or updates them
// to this node's configuration, retrying while JetStream is not ready.
func (b *Broker) ensureStreams(ctx context.Context) error {
	storage := jetstream.FileStorage
	if b.opts.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	p := b.opts.Prefix
	history := jetstream.StreamConfig{
		Name:              b.historyStream,
		Description:       "wsgate channel history, offsets and epochs",
		Subjects:          []string{p + ".h.>", p + ".i.>"},
		Retention:         jetstream.LimitsPolicy,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: -1,
		Discard:           jetstream.DiscardOld,
		Storage:           storage,
		Replicas:          b.opts.Replicas,
		Duplicates:        b.opts.IdempotencyWindow,
		AllowRollup:       true,
		AllowDirect:       true,
		AllowMsgTTL:       true,
		// Every stored publication (and stream marker) is republished on
		// the channel's fan-out subject, after it is stored, in stream
		// order: this is how publications with history reach the nodes.
		RePublish: &jetstream.RePublish{Source: p + ".h.>", Destination: p + ".c.>"},
	}
	presence := jetstream.StreamConfig{
		Name:              b.presenceStream,
		Description:       "wsgate channel presence",
		Subjects:          []string{p + ".p.>"},
		Retention:         jetstream.LimitsPolicy,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: 1,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.MemoryStorage,
		Replicas:          b.opts.Replicas,
		AllowDirect:       true,
		AllowMsgTTL:       true,
	}
	wait := 100 * time.Millisecond
	for {
		err := b.ensureStream(ctx, history)
		if err == nil {
			err = b.ensureStream(ctx, presence)
		}
		if err == nil {
			return nil
		}
		if !retryableStartError(err) {
			return fmt.Errorf("natsbroker: setting up streams: %w", err)
		}
		b.opts.Logger.Warn("natsbroker: waiting for JetStream", "error", err)
		select {
		case <-ctx.Done():
			return unavailable(fmt.Errorf("setting up streams: %w (last error: %w)", ctx.Err(), err))
		case <-b.closing:
			return fmt.Errorf("natsbroker: %w", net.ErrClosed)
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
	}
}

func retryableStartError(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 503: JetStream not ready yet (no meta leader, cluster forming);
		// 500: a transient internal error, such as a leadership change.
		return apiErr.Code == 503 || apiErr.Code == 500
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected)
}

func (b *Broker) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) error {
	reqCtx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	s, err := b.js.Stream(reqCtx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if _, err := b.js.CreateStream(reqCtx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return err
		}
		if cfg.Name == b.historyStream {
			b.dupWindow.Store(int64(cfg.Duplicates))
		}
		return nil
	case err != nil:
		return err
	}
	cur := s.CachedInfo().Config
	// Another node may have widened the duplicate window; never narrow it.
	cfg.Duplicates = max(cfg.Duplicates, cur.Duplicates)
	if cfg.Name == b.historyStream {
		b.dupWindow.Store(int64(cfg.Duplicates))
	}
	if streamConfigEqual(cur, cfg) {
		return nil
	}
	// Set what the broker relies on; keep what an operator may have set
	// (byte and message limits, placement, compression, metadata).
	next := cur
	next.Subjects = cfg.Subjects
	next.MaxMsgsPerSubject = cfg.MaxMsgsPerSubject
	next.Storage = cfg.Storage
	next.Replicas = cfg.Replicas
	next.Duplicates = cfg.Duplicates
	next.AllowRollup = cfg.AllowRollup
	next.AllowDirect = cfg.AllowDirect
	next.AllowMsgTTL = cfg.AllowMsgTTL
	next.RePublish = cfg.RePublish
	_, err = b.js.UpdateStream(reqCtx, next)
	return err
}

// streamConfigEqual compares the fields the broker sets.
func streamConfigEqual(a, b jetstream.StreamConfig) bool {
	eqRepublish := (a.RePublish == nil) == (b.RePublish == nil) &&
		(a.RePublish == nil || *a.RePublish == *b.RePublish)
	return strings.Join(a.Subjects, ",") == strings.Join(b.Subjects, ",") &&
		a.MaxMsgsPerSubject == b.MaxMsgsPerSubject && a.Storage == b.Storage &&
		a.Replicas == b.Replicas && a.Duplicates == b.Duplicates &&
		a.AllowRollup == b.AllowRollup && a.AllowDirect == b.AllowDirect &&
		a.AllowMsgTTL == b.AllowMsgTTL && eqRepublish
}

// ready fails when the broker is not running.
func (b *Broker) ready() error {
	select {
	case <-b.closing:
		return fmt.Errorf("natsbroker: %w", net.ErrClosed)
	default:
	}
	if !b.running.Load() {
		return errors.New("natsbroker: not running (call Run first)")
	}
	return nil
}

// Healthy returns nil when the broker is connected to NATS, and an error
// wrapping broker.ErrUnavailable while it is not (reconnecting, closed).
func (b *Broker) Healthy() error {
	if err := b.ready(); err != nil {
		return unavailable(err)
	}
	if st := b.nc.Status(); st != nats.CONNECTED {
		return unavailable(fmt.Errorf("NATS connection %s", st))
	}
	return nil
}

// BrokerStats reports the history stream's stored messages and bytes (the
// publications still stored, including those History already hides as
// expired, and each channel's markers) and how many times the NATS
// connection reconnected. It asks the stream's leader, bounded by
// Options.RequestTimeout.
func (b *Broker) BrokerStats(ctx context.Context) (broker.Stats, error) {
	if err := b.ready(); err != nil {
		return broker.Stats{}, unavailable(err)
	}
	st := broker.Stats{Reconnects: b.nc.Stats().Reconnects}
	reqCtx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	defer cancel()
	s, err := b.js.Stream(reqCtx, b.historyStream)
	if err != nil {
		return st, transportError(err)
	}
	state := s.CachedInfo().State
	st.HistoryPublications, st.HistoryBytes = state.Msgs, state.Bytes
	return st, nil
}

// Close stops deliveries, closes the NATS connection and waits, bounded by
// ctx, for the broker's goroutines to end. Calls after the first return
// nil.
func (b *Broker) Close(ctx context.Context) error {
	return b.close(ctx, true)
}

// close closes once; with wait it also waits for the goroutines (the
// goroutine that watches Run's context is one of them and must not).
func (b *Broker) close(ctx context.Context, wait bool) error {
	b.closeOnce.Do(func() {
		close(b.closing)
		b.mu.Lock()
		nc := b.nc
		b.mu.Unlock()
		if nc != nil {
			if nc.Status() == nats.CONNECTED {
				// Hand what is buffered to the server, then close.
				flushCtx, cancel := context.WithTimeout(ctx, time.Second)
				_ = nc.FlushWithContext(flushCtx)
				cancel()
			}
			nc.Close()
		}
	})
	if !wait {
		return nil
	}
	done := make(chan struct{})
	go func() {
		b.wg.Wait()
		b.mu.Lock()
		connected := b.nc != nil
		b.mu.Unlock()
		if connected {
			<-b.ncClosed
		}
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("natsbroker: close: %w", ctx.Err())
	}
}

// Subscribe makes this node receive ch: it subscribes to the channel's
// fan-out subject (and only to it, so a node never receives channels
// nobody on it listens to) and records the stream's position, against
// which the next deliveries are checked for gaps. It returns once the
// node's NATS server has the subscription; the other servers of a cluster
// learn of it a moment later. A publication with history routed by another
// server in that moment is recovered from the stream (see the package
// documentation); one without history is lost, as delivery without
// history is at most once.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := b.ready(); err != nil {
		return err
	}
	tok, err := subjectToken(ch)
	if err != nil {
		return err
	}
	if st := b.nc.Status(); st != nats.CONNECTED {
		return unavailable(fmt.Errorf("subscribing to %q: NATS connection %s", ch, st))
	}
	s := b.shardForToken(tok)
	cs, created, err := s.subscribe(ch, tok)
	if err != nil || !created {
		return err
	}
	flushCtx, cancel := context.WithTimeout(ctx, b.opts.RequestTimeout)
	err = b.nc.FlushWithContext(flushCtx)
	cancel()
	if err == nil {
		var top streamTop
		if top, err = b.readTop(ctx, tok); err == nil {
			s.post(ctrl{kind: ctrlPosition, cs: cs, top: top})
			return nil
		}
	}
	s.unsubscribe(ch)
	return transportError(fmt.Errorf("subscribing to %q: %w", ch, err))
}

// Unsubscribe stops delivering ch to this node and drops its NATS
// subscription.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	if err := b.ready(); err != nil {
		return err
	}
	tok, err := subjectToken(ch)
	if err != nil {
		return err
	}
	b.shardForToken(tok).unsubscribe(ch)
	return nil
}

// PublishJoin fans a join out to the nodes subscribed to ch.
func (b *Broker) PublishJoin(ctx context.Context, ch string, info *broker.ClientInfo) error {
	return b.publishPresenceEvent(ch, kindJoin, info)
}

// PublishLeave fans a leave out to the nodes subscribed to ch.
func (b *Broker) PublishLeave(ctx context.Context, ch string, info *broker.ClientInfo) error {
	return b.publishPresenceEvent(ch, kindLeave, info)
}

func (b *Broker) publishPresenceEvent(ch, kind string, info *broker.ClientInfo) error {
	if err := b.ready(); err != nil {
		return err
	}
	if info == nil {
		return errors.New("natsbroker: nil ClientInfo")
	}
	tok, err := subjectToken(ch)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(b.fanoutSubject(tok))
	msg.Header.Set(hdrKind, kind)
	msg.Data = encodeInfo(nil, info)
	if err := b.nc.PublishMsg(msg); err != nil {
		return transportError(err)
	}
	return nil
}
