package natsbroker

import (
	"context"
	"hash/maphash"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/wsgate/wsgate/broker"
)

// Delivery. Each subscribed channel has one NATS subscription on its
// fan-out subject, feeding the Go channel of the shard the channel hashes
// to; the shard's goroutine is the only one that calls the EventHandler
// for its channels, so calls for one channel never overlap and keep the
// order in which they were received.
//
// Publications with history arrive as JetStream republishes them, in
// stream order, which is offset order. The shard remembers, per channel,
// the last epoch and offset it delivered and checks every publication
// against it: a duplicate is dropped, a jump is filled by reading the
// missing publications from the stream before delivering the new one, and
// what cannot be read any more (trimmed, expired, removed, or more than
// MaxRepair) is reported with HandleGap. The same check runs against the
// stream's position after a reconnection, after NATS dropped messages for a
// slow consumer, and when a channel has been quiet for
// PositionCheckInterval, so a lost last publication is found too.

// shard delivers the channels that hash to it.
type shard struct {
	b    *Broker
	msgs chan *nats.Msg

	mu        sync.Mutex
	byChan    map[string]*chanState
	bySub     map[*nats.Subscription]*chanState
	pending   []ctrl
	reconnect bool
	dropped   map[*nats.Subscription]struct{}
	wake      chan struct{} // one slot: work is pending
}

// chanState is a subscribed channel. The fields below sub are owned by the
// shard's goroutine.
type chanState struct {
	ch, tok string
	sub     *nats.Subscription

	known     bool   // epoch and offset are set
	epoch     string // "" when the channel had no stream
	offset    uint64
	noHistory bool      // the channel had no stream at the last look
	activity  uint64    // deliveries so far, to tell stale position reads
	active    time.Time // the last delivery
	checked   bool      // the position was checked since the last delivery
	checking  bool      // a position read is in flight
}

type ctrlKind int

const (
	// ctrlPosition carries a stream position read for cs when cs.activity
	// was activity.
	ctrlPosition ctrlKind = iota + 1
)

type ctrl struct {
	kind     ctrlKind
	cs       *chanState
	top      streamTop
	activity uint64
	failed   bool // the read failed
	force    bool // the read was asked for because deliveries may be lost
}

// positionCheck asks a checker goroutine to read a channel's position.
type positionCheck struct {
	s        *shard
	cs       *chanState
	activity uint64
	force    bool
}

func newShard(b *Broker) *shard {
	return &shard{
		b:       b,
		msgs:    make(chan *nats.Msg, b.opts.ShardQueueSize),
		byChan:  make(map[string]*chanState),
		bySub:   make(map[*nats.Subscription]*chanState),
		dropped: make(map[*nats.Subscription]struct{}),
		wake:    make(chan struct{}, 1),
	}
}

func (b *Broker) shardForToken(tok string) *shard {
	return b.shards[maphash.String(b.seed, tok)%uint64(len(b.shards))]
}

// shardOfSub finds the shard of a fan-out subscription.
func (b *Broker) shardOfSub(sub *nats.Subscription) *shard {
	tok, ok := strings.CutPrefix(sub.Subject, b.opts.Prefix+".c.")
	if !ok {
		return nil
	}
	return b.shardForToken(tok)
}

func (s *shard) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// post queues a control message; it never blocks.
func (s *shard) post(c ctrl) {
	s.mu.Lock()
	s.pending = append(s.pending, c)
	s.mu.Unlock()
	s.signal()
}

// noteReconnect is called from the NATS callback goroutine.
func (s *shard) noteReconnect() {
	s.mu.Lock()
	s.reconnect = true
	s.mu.Unlock()
	s.signal()
}

// noteDropped is called from the NATS callback goroutine when NATS dropped
// messages of sub because the shard's queue was full.
func (s *shard) noteDropped(sub *nats.Subscription) {
	s.mu.Lock()
	s.dropped[sub] = struct{}{}
	s.mu.Unlock()
	s.signal()
}

// subscribe adds ch and its NATS subscription; created is false when ch
// was already subscribed.
func (s *shard) subscribe(ch, tok string) (*chanState, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cs := s.byChan[ch]; cs != nil {
		return cs, false, nil
	}
	// Under s.mu, so that the shard finds the subscription for its first
	// message.
	sub, err := s.b.nc.ChanSubscribe(s.b.fanoutSubject(tok), s.msgs)
	if err != nil {
		return nil, false, transportError(err)
	}
	cs := &chanState{ch: ch, tok: tok, sub: sub}
	s.byChan[ch] = cs
	s.bySub[sub] = cs
	return cs, true, nil
}

// unsubscribe removes ch; messages still queued for it are dropped.
func (s *shard) unsubscribe(ch string) {
	s.mu.Lock()
	cs := s.byChan[ch]
	if cs != nil {
		delete(s.byChan, ch)
		delete(s.bySub, cs.sub)
		delete(s.dropped, cs.sub)
	}
	s.mu.Unlock()
	if cs != nil {
		_ = cs.sub.Unsubscribe()
	}
}

func (s *shard) lookup(sub *nats.Subscription) *chanState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bySub[sub]
}

// run is the shard's goroutine.
func (s *shard) run() {
	var tick <-chan time.Time
	if iv := s.b.opts.PositionCheckInterval; iv > 0 {
		t := time.NewTicker(max(iv/2, 10*time.Millisecond))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-s.b.closing:
			return
		case m := <-s.msgs:
			s.handleMsg(m)
		case <-s.wake:
			s.handleControl()
		case now := <-tick:
			s.scan(now)
		}
	}
}

// call runs a handler method, recovering a panic.
func (s *shard) call(what string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			s.b.opts.Logger.Error("natsbroker: EventHandler panicked", "method", what, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	f()
}

func (s *shard) handleMsg(m *nats.Msg) {
	cs := s.lookup(m.Sub)
	if cs == nil {
		return // unsubscribed
	}
	if s.b.lose != nil && s.b.lose(m) {
		return
	}
	h := s.b.handler
	switch kind := m.Header.Get(hdrKind); kind {
	case kindJoin, kindLeave:
		info, err := decodeInfo(m.Data)
		if err != nil {
			s.b.opts.Logger.Warn("natsbroker: dropping an unreadable presence event", "channel", cs.ch, "error", err)
			return
		}
		if kind == kindJoin {
			s.call("HandleJoin", func() { h.HandleJoin(cs.ch, info) })
		} else {
			s.call("HandleLeave", func() { h.HandleLeave(cs.ch, info) })
		}
	case kindPub:
		if m.Header.Get(hdrOffset) == "" {
			pub, err := decodePublication(m.Data)
			if err != nil {
				s.b.opts.Logger.Warn("natsbroker: dropping an unreadable publication", "channel", cs.ch, "error", err)
				return
			}
			s.call("HandlePublication", func() { h.HandlePublication(cs.ch, pub, broker.StreamPosition{}) })
			return
		}
		s.onHistory(cs, m)
	case kindMeta:
		epoch, off, ok := positionOf(m.Header)
		if !ok {
			return
		}
		s.touch(cs)
		s.advance(cs, epoch, off)
	default:
		s.b.opts.Logger.Warn("natsbroker: dropping a message of unknown kind", "channel", cs.ch, "kind", kind)
	}
}

func positionOf(h nats.Header) (string, uint64, bool) {
	epoch := h.Get(hdrEpoch)
	off, err := strconv.ParseUint(h.Get(hdrOffset), 10, 64)
	return epoch, off, err == nil && epoch != ""
}

// touch records a delivery (or a stream marker) for cs.
func (s *shard) touch(cs *chanState) {
	cs.activity++
	cs.active = time.Now()
	cs.checked = false
	cs.noHistory = false
}

// onHistory delivers a publication with history in offset order.
func (s *shard) onHistory(cs *chanState, m *nats.Msg) {
	epoch, off, ok := positionOf(m.Header)
	if !ok {
		s.b.opts.Logger.Warn("natsbroker: dropping a publication without a position", "channel", cs.ch)
		return
	}
	s.touch(cs)
	pub, err := decodePublication(m.Data)
	if err != nil {
		s.b.opts.Logger.Warn("natsbroker: unreadable publication", "channel", cs.ch, "offset", off, "error", err)
	}
	switch {
	case !cs.known:
		// The first delivery since Subscribe, before its position read.
	case epoch != cs.epoch:
		// A new life of the stream: deliver its start first.
		if off > 1 {
			s.fill(cs, epoch, 0, off-1)
		}
	case off <= cs.offset:
		return // a duplicate
	case off > cs.offset+1:
		s.fill(cs, epoch, cs.offset, off-1)
	}
	cs.known, cs.epoch, cs.offset = true, epoch, off
	if pub == nil {
		s.gap(cs)
		return
	}
	pub.Offset = off
	sp := broker.StreamPosition{Offset: off, Epoch: epoch}
	s.call("HandlePublication", func() { s.b.handler.HandlePublication(cs.ch, pub, sp) })
}

// advance moves cs to a stream position learned without a publication (a
// stream marker or a position read), delivering what lies between.
func (s *shard) advance(cs *chanState, epoch string, off uint64) {
	switch {
	case !cs.known:
	case epoch != cs.epoch:
		if off > 0 {
			s.fill(cs, epoch, 0, off)
		}
	case off > cs.offset:
		s.fill(cs, epoch, cs.offset, off)
	default:
		return
	}
	cs.known, cs.epoch, cs.offset = true, epoch, off
}

// fill delivers the publications after offset after up to upto of epoch,
// reading them from the stream. What it cannot read is reported as a gap.
func (s *shard) fill(cs *chanState, epoch string, after, upto uint64) {
	want := upto - after
	if want > uint64(s.b.opts.MaxRepair) {
		s.gap(cs)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.b.opts.RequestTimeout)
	defer cancel()
	top, err := s.b.readTop(ctx, cs.tok)
	if err != nil || top.epoch != epoch {
		if err != nil {
			s.b.opts.Logger.Warn("natsbroker: reading missed publications", "channel", cs.ch, "error", err)
		}
		s.gap(cs)
		return
	}
	pubs, err := s.b.readPubs(ctx, cs.tok, top, broker.HistoryOptions{
		Since: &broker.StreamPosition{Offset: after, Epoch: epoch}, Limit: -1})
	if err != nil {
		s.b.opts.Logger.Warn("natsbroker: reading missed publications", "channel", cs.ch, "error", err)
		s.gap(cs)
		return
	}
	var got []*broker.Publication
	for _, p := range pubs {
		if p.Offset > after && p.Offset <= upto {
			got = append(got, p)
		}
	}
	complete := uint64(len(got)) == want
	for i, p := range got {
		if p.Offset != after+uint64(i)+1 {
			complete = false
		}
	}
	if !complete {
		s.gap(cs)
	}
	for _, p := range got {
		sp := broker.StreamPosition{Offset: p.Offset, Epoch: epoch}
		s.call("HandlePublication", func() { s.b.handler.HandlePublication(cs.ch, p, sp) })
	}
}

func (s *shard) gap(cs *chanState) {
	s.call("HandleGap", func() { s.b.handler.HandleGap([]string{cs.ch}) })
}

// handleControl processes what was posted, noted or checked.
func (s *shard) handleControl() {
	s.mu.Lock()
	pending := s.pending
	s.pending = nil
	reconnect := s.reconnect
	s.reconnect = false
	var dropped []*chanState
	for sub := range s.dropped {
		if cs := s.bySub[sub]; cs != nil {
			dropped = append(dropped, cs)
		}
		delete(s.dropped, sub)
	}
	var all []*chanState
	if reconnect {
		all = make([]*chanState, 0, len(s.byChan))
		for _, cs := range s.byChan {
			all = append(all, cs)
		}
	}
	s.mu.Unlock()

	for _, c := range pending {
		if c.kind == ctrlPosition {
			s.onPosition(c)
		}
	}
	// After a reconnection or a drop, publications may be missing: check
	// the channels with history against their streams, and report the
	// others, which cannot be checked.
	var unknown []string
	for _, cs := range append(dropped, all...) {
		if cs.known && !cs.noHistory {
			s.requestCheck(cs, true)
		} else {
			unknown = append(unknown, cs.ch)
		}
	}
	if len(unknown) > 0 {
		s.call("HandleGap", func() { s.b.handler.HandleGap(unknown) })
	}
}

// onPosition applies a position read for cs. Within one epoch positions
// only grow, so a read older than what was delivered since is harmless; a
// read of another epoch is trusted only when nothing was delivered since it
// was asked for, otherwise the check is made again. A failed read leaves cs
// unchecked, for a later scan; when deliveries may have been lost it is
// reported as a gap at once.
func (s *shard) onPosition(c ctrl) {
	cs, top := c.cs, c.top
	cs.checking = false
	if s.lookup(cs.sub) != cs {
		return
	}
	if c.failed {
		if c.force {
			s.gap(cs)
		}
		return
	}
	if !cs.known {
		// The position at Subscribe. The other NATS servers learn of the
		// new subscription a moment later, so what they route in that
		// moment may be lost: check again after PositionCheckInterval, as
		// after a delivery. A channel without a stream starts one with its
		// first publication, at offset 1.
		cs.known, cs.epoch, cs.offset = true, top.epoch, top.offset
		cs.active, cs.checked = time.Now(), false
		return
	}
	if top.epoch == "" {
		if cs.activity == c.activity {
			// Still no stream: a channel without history, nothing to check
			// until a publication with history shows up.
			cs.checked, cs.noHistory = true, true
		}
		if c.force {
			// Deliveries may have been lost, and without history there is
			// no telling.
			s.gap(cs)
		}
		return
	}
	if cs.known && top.epoch != cs.epoch && cs.activity != c.activity {
		s.requestCheck(cs, c.force)
		return
	}
	cs.checked = cs.activity == c.activity
	cs.noHistory = false
	s.advance(cs, top.epoch, top.offset)
}

// requestCheck asks a checker to read cs's position.
func (s *shard) requestCheck(cs *chanState, force bool) {
	if cs.checking && !force {
		return
	}
	select {
	case s.b.checks <- &positionCheck{s: s, cs: cs, activity: cs.activity, force: force}:
		cs.checking = true
	default:
		// The checkers are behind; the next scan asks again, but a loss
		// that may have happened is reported now.
		cs.checked = false
		if force {
			s.gap(cs)
		}
	}
}

// scan checks the channels with history that have been quiet for
// PositionCheckInterval since their last delivery.
func (s *shard) scan(now time.Time) {
	s.mu.Lock()
	due := make([]*chanState, 0, 8)
	for _, cs := range s.byChan {
		due = append(due, cs)
	}
	s.mu.Unlock()
	iv := s.b.opts.PositionCheckInterval
	for _, cs := range due {
		if cs.known && !cs.noHistory && !cs.checked && !cs.checking && now.Sub(cs.active) >= iv {
			s.requestCheck(cs, false)
		}
	}
}

// runChecker reads positions for the shards.
func (b *Broker) runChecker() {
	for {
		select {
		case <-b.closing:
			return
		case c := <-b.checks:
			ctx, cancel := context.WithTimeout(context.Background(), b.opts.RequestTimeout)
			top, err := b.readTop(ctx, c.cs.tok)
			cancel()
			if err != nil {
				b.opts.Logger.Warn("natsbroker: checking a channel's position", "channel", c.cs.ch, "error", err)
				c.s.post(ctrl{kind: ctrlPosition, cs: c.cs, failed: true, force: c.force})
				continue
			}
			c.s.post(ctrl{kind: ctrlPosition, cs: c.cs, top: top, activity: c.activity, force: c.force})
		}
	}
}
