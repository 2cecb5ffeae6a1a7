package broker

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"
)

// Memory is the single-node Broker and PresenceManager: every stream,
// idempotency record and presence entry lives in this process.
//
// Publications are delivered to the EventHandler synchronously, on the
// goroutine that called Publish (or PublishJoin, PublishLeave), and only
// for channels this node subscribed to. Deliveries of one channel are
// serialized in the order offsets were assigned, without holding any lock
// of the broker, so the handler may call the broker back (History,
// AddPresence, Publish to other channels); it must not publish to the
// channel being delivered from inside the delivery, which would wait for
// itself.
//
// Expired publications, streams and presence entries are never returned;
// a sweeper goroutine started by Run frees their memory and stops with
// Run's context or Close.
type Memory struct {
	cfg    MemoryConfig
	seed   maphash.Seed
	shards [memShards]memShard

	mu      sync.Mutex
	handler EventHandler
	stop    chan struct{} // closed by Close
	closed  bool
	done    chan struct{} // closed when the sweeper has exited; nil before Run
	now     func() time.Time
}

var (
	_ Broker          = (*Memory)(nil)
	_ PresenceManager = (*Memory)(nil)
	_ Closer          = (*Memory)(nil)
	_ StatsReporter   = (*Memory)(nil)
)

// MemoryConfig configures a Memory broker. The zero value means the
// documented defaults.
type MemoryConfig struct {
	// HistoryMetaTTL is how long a stream's epoch and offset outlive its
	// last publication or history read when the caller gives no meta TTL.
	// Defaults to 24h.
	HistoryMetaTTL time.Duration
	// PresenceTTL is how long a presence entry lives without being
	// refreshed by AddPresence. Defaults to 60s.
	PresenceTTL time.Duration
	// SweepInterval is how often expired data is freed. Defaults to 1s.
	SweepInterval time.Duration
}

// Memory defaults, documented on MemoryConfig and PublishOptions.
const (
	DefaultHistoryMetaTTL      = 24 * time.Hour
	DefaultPresenceTTL         = 60 * time.Second
	DefaultIdempotentResultTTL = 5 * time.Minute
	defaultSweepInterval       = time.Second
)

const memShards = 64

var errRunTwice = errors.New("broker: Run called twice")

type memShard struct {
	mu       sync.Mutex
	streams  map[string]*memStream
	subs     map[string]*memSub
	idem     map[idemKey]idemResult
	presence map[string]map[string]presenceEntry
}

type memStream struct {
	epoch        string
	top          uint64
	pubs         []*Publication // oldest first; pubs[i].Offset is consecutive
	ttl          time.Duration  // HistoryTTL of the last publication
	metaExpireAt int64          // unix nanoseconds
}

// memSub orders deliveries of one subscribed channel: each delivery takes a
// ticket under the shard lock and waits for its turn without it. It stays
// in the shard while deliveries are in flight, even unsubscribed, so that a
// quick resubscription keeps the order.
type memSub struct {
	active bool // guarded by the shard lock

	mu     sync.Mutex
	cond   sync.Cond
	issued uint64
	served uint64
}

type idemKey struct{ ch, key string }

type idemResult struct {
	pos      StreamPosition
	expireAt int64
}

type presenceEntry struct {
	info     *ClientInfo
	expireAt int64
}

// NewMemory returns a Memory broker with cfg.
func NewMemory(cfg MemoryConfig) *Memory {
	if cfg.HistoryMetaTTL <= 0 {
		cfg.HistoryMetaTTL = DefaultHistoryMetaTTL
	}
	if cfg.PresenceTTL <= 0 {
		cfg.PresenceTTL = DefaultPresenceTTL
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = defaultSweepInterval
	}
	m := &Memory{cfg: cfg, seed: maphash.MakeSeed(), stop: make(chan struct{}), now: time.Now}
	for i := range m.shards {
		s := &m.shards[i]
		s.streams = make(map[string]*memStream)
		s.subs = make(map[string]*memSub)
		s.idem = make(map[idemKey]idemResult)
		s.presence = make(map[string]map[string]presenceEntry)
	}
	return m
}

func (m *Memory) shard(ch string) *memShard {
	return &m.shards[maphash.String(m.seed, ch)%memShards]
}

// Run records h as the receiver of deliveries and starts the sweeper. It
// returns at once. Deliveries and the sweeper stop when ctx is done or
// Close is called. Run may be called once.
func (m *Memory) Run(ctx context.Context, h EventHandler) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrUnavailable
	}
	if m.handler != nil {
		return errRunTwice
	}
	m.handler = h
	m.done = make(chan struct{})
	go m.sweep(ctx)
	return nil
}

// Close stops deliveries and the sweeper and waits for the sweeper to exit
// (or ctx to be done). Data stays readable. Calling it again does nothing.
func (m *Memory) Close(ctx context.Context) error {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.stop)
	}
	done := m.done
	m.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// deliverer returns the handler when deliveries are on.
func (m *Memory) deliverer() EventHandler {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	return m.handler
}

func (m *Memory) sweep(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			m.closed = true
			m.mu.Unlock()
			return
		case <-m.stop:
			return
		case <-t.C:
		}
		now := m.now().UnixNano()
		for i := range m.shards {
			m.shards[i].sweep(now)
		}
	}
}

func (s *memShard) sweep(now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, st := range s.streams {
		if st.metaExpireAt <= now {
			delete(s.streams, ch)
			continue
		}
		st.expire(now)
	}
	for k, r := range s.idem {
		if r.expireAt <= now {
			delete(s.idem, k)
		}
	}
	for ch, entries := range s.presence {
		for id, e := range entries {
			if e.expireAt <= now {
				delete(entries, id)
			}
		}
		if len(entries) == 0 {
			delete(s.presence, ch)
		}
	}
}

// expire drops publications older than the stream's TTL.
func (st *memStream) expire(now int64) {
	if st.ttl <= 0 {
		return
	}
	cut := (now - int64(st.ttl)) / int64(time.Millisecond)
	i := 0
	for i < len(st.pubs) && st.pubs[i].Time <= cut {
		i++
	}
	st.drop(i)
}

// drop removes the n oldest publications.
func (st *memStream) drop(n int) {
	if n == 0 {
		return
	}
	clear(st.pubs[:n])
	st.pubs = st.pubs[n:]
	if len(st.pubs) == 0 {
		st.pubs = nil
	}
}

// streamLocked returns ch's live stream, creating one (offset 0, fresh
// epoch) when there is none or it expired.
func (s *memShard) streamLocked(ch string, now int64) *memStream {
	st := s.streams[ch]
	if st != nil && st.metaExpireAt <= now {
		st = nil
	}
	if st == nil {
		st = &memStream{epoch: newEpoch()}
		s.streams[ch] = st
	}
	st.expire(now)
	return st
}

func (m *Memory) metaTTL(d time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return m.cfg.HistoryMetaTTL
}

// Subscribe makes Publish deliver ch's publications, joins and leaves to
// the handler. Subscribing twice is the same as once.
func (m *Memory) Subscribe(_ context.Context, ch string) error {
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	sub := s.subs[ch]
	if sub == nil {
		sub = &memSub{}
		sub.cond.L = &sub.mu
		s.subs[ch] = sub
	}
	sub.active = true
	return nil
}

// Unsubscribe stops deliveries of ch. Deliveries already started finish.
func (m *Memory) Unsubscribe(_ context.Context, ch string) error {
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sub := s.subs[ch]; sub != nil {
		sub.active = false
		s.dropIdleLocked(ch, sub)
	}
	return nil
}

// dropIdleLocked forgets an unsubscribed channel without deliveries in
// flight.
func (s *memShard) dropIdleLocked(ch string, sub *memSub) {
	if sub.active {
		return
	}
	sub.mu.Lock()
	idle := sub.issued == sub.served
	sub.mu.Unlock()
	if idle && s.subs[ch] == sub {
		delete(s.subs, ch)
	}
}

// Publish stores data in ch's stream when opts.HistorySize > 0 and
// delivers it when this node subscribed to ch, before returning.
func (m *Memory) Publish(ctx context.Context, ch string, data []byte, opts PublishOptions) (StreamPosition, error) {
	if err := ctx.Err(); err != nil {
		return StreamPosition{}, err
	}
	now := m.now()
	nowNS := now.UnixNano()
	pub := &Publication{Data: data, Info: opts.ClientInfo, Tags: opts.Tags, Time: now.UnixMilli()}
	s := m.shard(ch)
	s.mu.Lock()
	var ik idemKey
	if opts.IdempotencyKey != "" {
		ik = idemKey{ch, opts.IdempotencyKey}
		if r, ok := s.idem[ik]; ok && r.expireAt > nowNS {
			s.mu.Unlock()
			return r.pos, nil
		}
	}
	var pos StreamPosition
	if opts.HistorySize > 0 {
		if opts.HistoryTTL <= 0 {
			s.mu.Unlock()
			return StreamPosition{}, fmt.Errorf("broker: publish to %q: a history of %d publications needs a HistoryTTL", ch, opts.HistorySize)
		}
		st := s.streamLocked(ch, nowNS)
		st.top++
		pub.Offset = st.top
		st.pubs = append(st.pubs, pub)
		if over := len(st.pubs) - opts.HistorySize; over > 0 {
			st.drop(over)
		}
		st.ttl = opts.HistoryTTL
		meta := nowNS + int64(m.metaTTL(opts.HistoryMetaTTL))
		if keep := nowNS + int64(opts.HistoryTTL); keep > meta {
			meta = keep
		}
		st.metaExpireAt = max(st.metaExpireAt, meta)
		pos = StreamPosition{Offset: st.top, Epoch: st.epoch}
	}
	if ik.key != "" {
		ttl := opts.IdempotentResultTTL
		if ttl <= 0 {
			ttl = DefaultIdempotentResultTTL
		}
		s.idem[ik] = idemResult{pos: pos, expireAt: nowNS + int64(ttl)}
	}
	sub, ticket := s.ticketLocked(ch)
	s.mu.Unlock()
	if sub != nil {
		sub.deliver(ticket, func(h EventHandler) { h.HandlePublication(ch, pub, pos) }, m, s, ch)
	}
	return pos, nil
}

// ticketLocked takes ch's next delivery ticket; sub is nil when this node
// did not subscribe to ch.
func (s *memShard) ticketLocked(ch string) (*memSub, uint64) {
	sub := s.subs[ch]
	if sub == nil || !sub.active {
		return nil, 0
	}
	sub.mu.Lock()
	t := sub.issued
	sub.issued++
	sub.mu.Unlock()
	return sub, t
}

// deliver waits for ticket's turn, runs f with the handler (when
// deliveries are on) and lets the next ticket go.
func (sub *memSub) deliver(ticket uint64, f func(EventHandler), m *Memory, s *memShard, ch string) {
	sub.mu.Lock()
	for sub.served != ticket {
		sub.cond.Wait()
	}
	sub.mu.Unlock()
	defer func() {
		sub.mu.Lock()
		sub.served++
		sub.mu.Unlock()
		sub.cond.Broadcast()
		s.mu.Lock()
		s.dropIdleLocked(ch, sub)
		s.mu.Unlock()
	}()
	if h := m.deliverer(); h != nil {
		f(h)
	}
}

// PublishJoin delivers a join of ch, in order with ch's publications.
func (m *Memory) PublishJoin(ctx context.Context, ch string, info *ClientInfo) error {
	return m.publishPresenceEvent(ctx, ch, func(h EventHandler) { h.HandleJoin(ch, info) })
}

// PublishLeave delivers a leave of ch, in order with ch's publications.
func (m *Memory) PublishLeave(ctx context.Context, ch string, info *ClientInfo) error {
	return m.publishPresenceEvent(ctx, ch, func(h EventHandler) { h.HandleLeave(ch, info) })
}

func (m *Memory) publishPresenceEvent(ctx context.Context, ch string, f func(EventHandler)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := m.shard(ch)
	s.mu.Lock()
	sub, ticket := s.ticketLocked(ch)
	s.mu.Unlock()
	if sub != nil {
		sub.deliver(ticket, f, m, s, ch)
	}
	return nil
}

// History returns publications of ch's stream selected by opts and the
// stream's position. Reading a channel that has no stream creates an
// empty one, so that its epoch stays stable until the stream expires.
func (m *Memory) History(ctx context.Context, ch string, opts HistoryOptions) ([]*Publication, StreamPosition, error) {
	if err := ctx.Err(); err != nil {
		return nil, StreamPosition{}, err
	}
	now := m.now().UnixNano()
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streamLocked(ch, now)
	switch {
	case st.metaExpireAt == 0:
		// A stream History created: it keeps its epoch for the meta TTL.
		st.metaExpireAt = now + int64(m.metaTTL(opts.MetaTTL))
	case opts.MetaTTL > 0:
		st.metaExpireAt = max(st.metaExpireAt, now+int64(opts.MetaTTL))
	}
	pos := StreamPosition{Offset: st.top, Epoch: st.epoch}
	if opts.Limit == 0 || len(st.pubs) == 0 {
		return nil, pos, nil
	}
	pubs := st.pubs
	if since := opts.Since; since != nil && since.Epoch == st.epoch {
		first := pubs[0].Offset
		if opts.Reverse {
			// Publications before since, newest first.
			end := 0
			if since.Offset > first {
				end = int(min(since.Offset-first, uint64(len(pubs))))
			}
			pubs = pubs[:end]
		} else {
			start := 0
			if since.Offset >= first {
				start = int(min(since.Offset-first+1, uint64(len(pubs))))
			}
			pubs = pubs[start:]
		}
	}
	n := len(pubs)
	if opts.Limit > 0 && opts.Limit < n {
		n = opts.Limit
	}
	out := make([]*Publication, n)
	if opts.Reverse {
		for i := range out {
			out[i] = pubs[len(pubs)-1-i]
		}
	} else {
		copy(out, pubs[:n])
	}
	return out, pos, nil
}

// RemoveHistory deletes ch's publications; its epoch and offset stay.
func (m *Memory) RemoveHistory(ctx context.Context, ch string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.streams[ch]; st != nil {
		st.drop(len(st.pubs))
	}
	return nil
}

// Presence returns ch's live entries by client ID.
func (m *Memory) Presence(ctx context.Context, ch string) (map[string]*ClientInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	now := m.now().UnixNano()
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	entries := s.presence[ch]
	out := make(map[string]*ClientInfo, len(entries))
	for id, e := range entries {
		if e.expireAt > now {
			out[id] = e.info
		}
	}
	return out, nil
}

// PresenceStats counts ch's live clients and distinct users.
func (m *Memory) PresenceStats(ctx context.Context, ch string) (PresenceStats, error) {
	if err := ctx.Err(); err != nil {
		return PresenceStats{}, err
	}
	now := m.now().UnixNano()
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	entries := s.presence[ch]
	users := make(map[string]struct{}, len(entries))
	var st PresenceStats
	for _, e := range entries {
		if e.expireAt > now {
			st.NumClients++
			users[e.info.UserID] = struct{}{}
		}
	}
	st.NumUsers = len(users)
	return st, nil
}

// AddPresence adds or refreshes info's entry in ch for PresenceTTL.
func (m *Memory) AddPresence(ctx context.Context, ch string, info *ClientInfo) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	now := m.now().UnixNano()
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	entries := s.presence[ch]
	if entries == nil {
		entries = make(map[string]presenceEntry)
		s.presence[ch] = entries
	}
	entries[info.ClientID] = presenceEntry{info: info, expireAt: now + int64(m.cfg.PresenceTTL)}
	return nil
}

// RemovePresence removes a client's entry from ch.
func (m *Memory) RemovePresence(ctx context.Context, ch string, clientID, _ string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s := m.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if entries := s.presence[ch]; entries != nil {
		delete(entries, clientID)
		if len(entries) == 0 {
			delete(s.presence, ch)
		}
	}
	return nil
}

// newEpoch returns a random stream epoch.
func newEpoch() string {
	var b [6]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// BrokerStats counts the publications Memory holds in history and their
// payload bytes. It visits every channel with history, shard by shard.
func (m *Memory) BrokerStats(ctx context.Context) (Stats, error) {
	var st Stats
	for i := range m.shards {
		if err := ctx.Err(); err != nil {
			return Stats{}, err
		}
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, s := range sh.streams {
			st.HistoryPublications += uint64(len(s.pubs))
			for _, p := range s.pubs {
				st.HistoryBytes += uint64(len(p.Data))
			}
		}
		sh.mu.Unlock()
	}
	return st, nil
}
