package hub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker"
)

const numShards = 64

// Hub holds clients and channels and moves publications from the broker to
// the subscribers' connections.
//
// Concurrency: every method is safe for concurrent use. Clients, users and
// channels live in separate shards, each with its own lock, so publishing
// to many channels never serializes on one mutex. A publication is
// encoded once per protocol codec among the channel's subscribers; the
// same bytes are then written to every subscriber's connection from a
// snapshot of the subscriber list, without any hub lock held. Writes never
// block: a subscriber whose send queue is full is a slow consumer and is
// disconnected (DisconnectSlow) without delaying the others.
//
// Goroutines: the hub owns two tickers (per-client work: pings, pong and
// expiry checks, stale connections; per-channel work: presence refresh and
// position checks), a third that announces the node when the broker is a
// broker.NodeDirectory, and the goroutines started with Go. Shutdown stops
// them all. There is no goroutine or timer per client.
type Hub struct {
	cfg      Config
	rules    *channelRules
	broker   broker.Broker
	presence broker.PresenceManager
	log      *slog.Logger
	seed     maphash.Seed
	started  time.Time
	nodeID   string

	clients [numShards]clientShard
	users   [numShards]userShard
	chans   [numShards]chanShard
	// brokerLocks serialize Broker.Subscribe and Unsubscribe per channel
	// name, as the Broker contract asks.
	brokerLocks [256]sync.Mutex

	life   context.Context
	cancel context.CancelFunc

	goMu    sync.Mutex
	wg      sync.WaitGroup // the functions started with Go
	closing bool
	tickers sync.WaitGroup

	// Goroutines that ran a function of Go stay for the next one, at most
	// maxIdleWorkers of them: a fresh goroutine grows its stack again for
	// every connection's commands, which was 8 % of a connect+subscribe.
	work     chan func()    // hands a function to an idle worker
	workStop chan struct{}  // closed by Shutdown: idle workers end
	idle     atomic.Int32   // workers waiting on work
	workers  sync.WaitGroup // every worker goroutine

	pings struct {
		sync.Mutex
		codecs []Codec
		pms    []*wsgate.PreparedMessage
	}

	stats counters
}

type clientShard struct {
	mu      sync.RWMutex
	clients map[string]*Client
}

type userShard struct {
	mu    sync.RWMutex
	users map[string][]*Client
}

type chanShard struct {
	mu    sync.RWMutex
	chans map[string]*channel
}

type counters struct {
	clients, users, channels, subs atomic.Int64
	publications, deliveries       atomic.Uint64
	slow, insufficient             atomic.Uint64
	joins, leaves                  atomic.Uint64
}

// Stats is a snapshot of the hub's counters.
type Stats struct {
	Clients       int // connected clients
	Users         int // distinct user IDs among them (anonymous counts as one)
	Channels      int // channels with at least one subscriber on this node
	Subscriptions int
	// Publications counts publications accepted by Publish, Broadcast and
	// client publishes on this node.
	Publications uint64
	// Deliveries counts publication frames handed to connections.
	Deliveries uint64
	// SlowDisconnects counts clients disconnected because their send queue
	// was full.
	SlowDisconnects uint64
	// InsufficientState counts subscriptions ended (or connections closed)
	// because they lost publications.
	InsufficientState uint64
}

// New starts a hub with cfg: it runs the broker (ctx bounds only that
// start) and the hub's tickers. Stop it with Shutdown.
func New(ctx context.Context, cfg Config) (*Hub, error) {
	rules, err := newChannelRules(cfg.Channels)
	if err != nil {
		return nil, err
	}
	if cfg.ClientChannelLimit <= 0 {
		cfg.ClientChannelLimit = DefaultClientChannelLimit
	}
	if cfg.PingInterval == 0 {
		cfg.PingInterval = DefaultPingInterval
	}
	if cfg.PongTimeout == 0 {
		cfg.PongTimeout = DefaultPongTimeout
	}
	if cfg.StaleCloseDelay <= 0 {
		cfg.StaleCloseDelay = DefaultStaleCloseDelay
	}
	if cfg.ExpiredCloseDelay <= 0 {
		cfg.ExpiredCloseDelay = DefaultExpiredCloseDelay
	}
	if cfg.PresenceUpdateInterval <= 0 {
		cfg.PresenceUpdateInterval = DefaultPresenceUpdateInterval
	}
	if cfg.PositionCheckInterval <= 0 {
		cfg.PositionCheckInterval = DefaultPositionCheckInterval
	}
	if cfg.NodeAnnounceInterval <= 0 {
		cfg.NodeAnnounceInterval = DefaultNodeAnnounceInterval
	}
	if cfg.SyncBufferLimit <= 0 {
		cfg.SyncBufferLimit = DefaultSyncBufferLimit
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	if cfg.Broker == nil {
		cfg.Broker = broker.NewMemory(broker.MemoryConfig{})
	}
	if cfg.Presence == nil {
		if pm, ok := cfg.Broker.(broker.PresenceManager); ok {
			cfg.Presence = pm
		} else {
			cfg.Presence = broker.NewMemory(broker.MemoryConfig{})
		}
	}
	h := &Hub{
		cfg:      cfg,
		rules:    rules,
		broker:   cfg.Broker,
		presence: cfg.Presence,
		log:      cfg.Logger,
		seed:     maphash.MakeSeed(),
		started:  time.Now(),
		nodeID:   newID(),
	}
	for i := range numShards {
		h.clients[i].clients = make(map[string]*Client)
		h.users[i].users = make(map[string][]*Client)
		h.chans[i].chans = make(map[string]*channel)
	}
	h.work = make(chan func())
	h.workStop = make(chan struct{})
	h.life, h.cancel = context.WithCancel(context.Background())
	// ctx bounds the broker's start only; its deliveries live as long as
	// the hub.
	stop := context.AfterFunc(ctx, h.cancel)
	err = h.broker.Run(h.life, h)
	if !stop() || err != nil {
		h.cancel()
		if err == nil {
			err = ctx.Err()
		}
		h.closeBackends(context.Background())
		return nil, fmt.Errorf("hub: starting the broker: %w", err)
	}
	h.tickers.Add(2)
	go h.clientTicker()
	go h.channelTicker()
	if nd, ok := h.broker.(broker.NodeDirectory); ok {
		h.tickers.Add(1)
		go h.nodeTicker(nd)
	}
	return h, nil
}

// Go runs f on a goroutine that Shutdown waits for. Transports use it for
// work that must not run on an event loop (a client's commands). The
// goroutine may be one that ran an earlier f: up to 64 stay between
// functions, so their stacks need not grow again, and Shutdown ends them. It
// returns false, without running f, once Shutdown has started. A panic in
// f is logged and recovered.
func (h *Hub) Go(f func()) bool {
	h.goMu.Lock()
	if h.closing {
		h.goMu.Unlock()
		return false
	}
	h.wg.Add(1)
	h.workers.Add(1) // for a new worker; given back if an idle one takes f
	h.goMu.Unlock()
	select {
	case h.work <- f:
		h.workers.Done()
	default:
		go h.worker(f)
	}
	return true
}

// maxIdleWorkers bounds the goroutines kept for Go between functions.
const maxIdleWorkers = 64

// worker runs f, then, as one of at most maxIdleWorkers idle workers,
// waits for the next function of Go until Shutdown.
func (h *Hub) worker(f func()) {
	defer h.workers.Done()
	for {
		h.runWork(f)
		if h.idle.Add(1) > maxIdleWorkers {
			h.idle.Add(-1)
			return
		}
		select {
		case f = <-h.work:
			h.idle.Add(-1)
		case <-h.workStop:
			h.idle.Add(-1)
			return
		}
	}
}

func (h *Hub) runWork(f func()) {
	defer h.wg.Done()
	defer h.recoverPanic("goroutine")
	f()
}

func (h *Hub) recoverPanic(what string) {
	if r := recover(); r != nil {
		h.log.Error("hub: panic recovered", "in", what, "panic", r, "stack", string(debug.Stack()))
	}
}

// Shutdown drains the hub: new connects are refused, every client is
// disconnected with DisconnectShutdown, and Shutdown waits until they have
// all gone, the tickers and the goroutines started with Go have stopped,
// and the broker and presence manager are closed (when they implement
// broker.Closer) — or until ctx is done, returning its error. Calling it
// again waits again.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.goMu.Lock()
	first := !h.closing
	h.closing = true
	if first {
		close(h.workStop)
	}
	h.goMu.Unlock()
	if first {
		for i := range h.clients {
			for _, c := range h.clients[i].snapshot(nil) {
				c.Disconnect(DisconnectShutdown)
			}
		}
	}
	// Wait for the clients to go: their connections close, the transport
	// calls Finish, and Finish unregisters them.
	for h.numRegistered() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("hub: shutdown: %d clients still connected: %w", h.numRegistered(), ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		h.workers.Wait()
		h.cancel()
		h.tickers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("hub: shutdown: %w", ctx.Err())
	}
	return h.closeBackends(ctx)
}

func (h *Hub) closeBackends(ctx context.Context) error {
	var errs []error
	if c, ok := h.cfg.Broker.(broker.Closer); ok {
		errs = append(errs, c.Close(ctx))
	}
	if c, ok := h.cfg.Presence.(broker.Closer); ok && any(h.cfg.Presence) != any(h.cfg.Broker) {
		errs = append(errs, c.Close(ctx))
	}
	return errors.Join(errs...)
}

func (h *Hub) isClosing() bool {
	h.goMu.Lock()
	defer h.goMu.Unlock()
	return h.closing
}

func (h *Hub) numRegistered() int {
	n := 0
	for i := range h.clients {
		s := &h.clients[i]
		s.mu.RLock()
		n += len(s.clients)
		s.mu.RUnlock()
	}
	return n
}

// Stats returns the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{
		Clients:           int(h.stats.clients.Load()),
		Users:             int(h.stats.users.Load()),
		Channels:          int(h.stats.channels.Load()),
		Subscriptions:     int(h.stats.subs.Load()),
		Publications:      h.stats.publications.Load(),
		Deliveries:        h.stats.deliveries.Load(),
		SlowDisconnects:   h.stats.slow.Load(),
		InsufficientState: h.stats.insufficient.Load(),
	}
}

// NodeInfo describes this node.
type NodeInfo struct {
	ID            string
	Name          string
	Version       string
	NumClients    int
	NumUsers      int
	NumChannels   int
	NumSubs       int
	UptimeSeconds int64
}

// Info describes this node; Nodes describes every node of a cluster.
func (h *Hub) Info() NodeInfo {
	s := h.Stats()
	return NodeInfo{
		ID:            h.nodeID,
		Name:          h.cfg.Name,
		Version:       h.cfg.Version,
		NumClients:    s.Clients,
		NumUsers:      s.Users,
		NumChannels:   s.Channels,
		NumSubs:       s.Subscriptions,
		UptimeSeconds: int64(time.Since(h.started) / time.Second),
	}
}

// Nodes describes the nodes of the cluster: this one, fresh, and, when the
// broker is a broker.NodeDirectory, every other node whose announcement
// has not expired, sorted by name then ID (this one first among equals).
// With a single-node broker it is just Info.
func (h *Hub) Nodes() []NodeInfo {
	self := h.Info()
	out := []NodeInfo{self}
	if nd, ok := h.broker.(broker.NodeDirectory); ok {
		for _, n := range nd.Nodes() {
			if n.ID == self.ID {
				continue
			}
			out = append(out, NodeInfo{
				ID: n.ID, Name: n.Name, Version: n.Version,
				NumClients: n.Clients, NumUsers: n.Users, NumChannels: n.Channels,
				NumSubs: n.Subscriptions, UptimeSeconds: n.UptimeSeconds,
			})
		}
	}
	slices.SortStableFunc(out, func(a, b NodeInfo) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// nodeTicker announces this node to the others every
// NodeAnnounceInterval, and once at once.
func (h *Hub) nodeTicker(nd broker.NodeDirectory) {
	defer h.tickers.Done()
	defer h.recoverPanic("node ticker")
	every := h.cfg.NodeAnnounceInterval
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		i := h.Info()
		ctx, cancel := context.WithTimeout(h.life, every)
		err := nd.AnnounceNode(ctx, broker.NodeInfo{
			ID: i.ID, Name: i.Name, Version: i.Version,
			Clients: i.NumClients, Users: i.NumUsers, Channels: i.NumChannels,
			Subscriptions: i.NumSubs, UptimeSeconds: i.UptimeSeconds, TTL: 3 * every,
		})
		cancel()
		if err != nil && h.life.Err() == nil {
			h.log.Debug("hub: announcing the node", "err", err)
		}
		select {
		case <-h.life.Done():
			return
		case <-t.C:
		}
	}
}

func (h *Hub) clientShard(id string) *clientShard {
	return &h.clients[maphash.String(h.seed, id)%numShards]
}

func (h *Hub) userShard(user string) *userShard {
	return &h.users[maphash.String(h.seed, user)%numShards]
}

func (h *Hub) chanShard(ch string) *chanShard {
	return &h.chans[maphash.String(h.seed, ch)%numShards]
}

func (h *Hub) brokerLock(ch string) *sync.Mutex {
	return &h.brokerLocks[maphash.String(h.seed, ch)%uint64(len(h.brokerLocks))]
}

// snapshot appends the shard's clients to dst.
func (s *clientShard) snapshot(dst []*Client) []*Client {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.clients {
		dst = append(dst, c)
	}
	return dst
}

// UserClients returns the connected clients of user on this node.
func (h *Hub) UserClients(user string) []*Client {
	s := h.userShard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]*Client(nil), s.users[user]...)
}

// ClientByID returns the client with id, or nil.
func (h *Hub) ClientByID(id string) *Client {
	s := h.clientShard(id)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.clients[id]
}

// pingOf returns codec's ping, prepared once.
func (h *Hub) pingOf(codec Codec) *wsgate.PreparedMessage {
	h.pings.Lock()
	defer h.pings.Unlock()
	for i, c := range h.pings.codecs {
		if c == codec {
			return h.pings.pms[i]
		}
	}
	pm, err := wsgate.NewPreparedMessage(codec.MessageType(), codec.EncodePing())
	if err != nil {
		return nil
	}
	h.pings.codecs = append(h.pings.codecs, codec)
	h.pings.pms = append(h.pings.pms, pm)
	return pm
}
