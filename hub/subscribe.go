package hub

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wsgate/wsgate/broker"
)

// channel is a channel with subscribers on this node.
//
// Its subscriber list grows in place and is published to deliveries as an
// immutable prefix (subs): adding a subscriber writes past every published
// prefix, so readers never race with it, and costs amortized O(1).
// Removing one only marks it (its state is subGone, deliveries skip it);
// the list is compacted, into a new array, when the removed ones outnumber
// the live ones. A channel with many subscribers thus never copies its
// list per subscribe.
type channel struct {
	name string
	opts *ChannelOptions

	mu   sync.Mutex                      // guards arr, dead, refs, dead and subscription.removed
	subs atomic.Pointer[[]*subscription] // arr[:n], read by deliveries without a lock
	arr  []*subscription
	dead int // removed subscriptions still in arr
	refs int // live subscriptions, pending ones included
	gone bool

	subscribed bool // the broker delivers it; guarded by the hub's brokerLock

	// The stream top seen by the last position check; guarded by mu.
	checkEpoch  string
	checkOffset uint64
}

// subscription is one client's subscription to one channel.
type subscription struct {
	client *Client
	ch     *channel
	flags  uint8
	state  atomic.Uint32
	// offset is the last publication offset this positioned subscriber
	// got; written only by the channel's (serialized) deliveries once live.
	offset   atomic.Uint64
	epoch    string
	expireAt atomic.Int64 // Unix seconds; 0 for none
	chanInfo []byte

	wasLive atomic.Bool // it went live: its end publishes a leave
	removed bool        // removed from its channel; guarded by ch.mu

	mu       sync.Mutex // guards buf while pending
	buf      []pendingPub
	overflow bool
}

type pendingPub struct {
	pub *broker.Publication
	sp  broker.StreamPosition
}

const (
	subPending uint32 = iota
	subLive
	subGone
)

const (
	flagPositioned uint8 = 1 << iota
	flagRecoverable
	flagPresence
	flagEmitJoinLeave
	flagPushJoinLeave
	flagServerSide
)

func (s *subscription) has(f uint8) bool { return s.flags&f != 0 }

// SubscribeRequest is a client's subscribe request.
type SubscribeRequest struct {
	Channel string
	Token   string
	Data    []byte
	// Recover asks for the publications after Epoch and Offset.
	Recover bool
	Epoch   string
	Offset  uint64
	// Hints the namespace may grant (Allow* options).
	Positioned  bool
	Recoverable bool
	JoinLeave   bool
	// RejectUnrecovered fails the subscription with
	// ErrorUnrecoverablePosition instead of succeeding unrecovered.
	RejectUnrecovered bool
}

// SubscribeResult is the outcome of a subscription.
type SubscribeResult struct {
	Expires     bool
	TTL         uint32 // seconds until the subscription expires
	Recoverable bool
	Positioned  bool
	Epoch       string
	Offset      uint64
	// Publications are the recovered ones, oldest first.
	Publications  []*broker.Publication
	Recovered     bool
	WasRecovering bool
	Data          []byte
}

// Subscribe handles a client's subscribe request, with Centrifugo's rules:
// the channel's namespace and name are checked, then the subscription
// token or the namespace's permissions, then OnSubscribe. reply must write
// the result to the client; the subscription goes live after it, so
// publications always follow the reply, and those published meanwhile are
// neither lost nor repeated.
func (h *Hub) Subscribe(ctx context.Context, c *Client, req SubscribeRequest, reply func(*SubscribeResult) error) error {
	if !c.Connected() {
		return DisconnectBadRequest
	}
	ch := req.Channel
	if ch == "" {
		return DisconnectBadRequest
	}
	if len(ch) > h.rules.maxLength {
		return ErrorBadRequest
	}
	c.mu.Lock()
	dup, n := c.subLocked(ch) != nil, len(c.subs)
	user := c.user
	c.mu.Unlock()
	if dup {
		return ErrorAlreadySubscribed
	}
	if n >= h.cfg.ClientChannelLimit {
		return ErrorLimitExceeded
	}
	o, rest, err := h.rules.resolve(ch)
	if err != nil {
		return err
	}
	if !h.rules.validName(ch, rest, o) {
		return ErrorBadRequest
	}
	opts := defaultSubscribeOptions(o)
	allowed := false
	userLimited := h.rules.isUserLimited(ch, o)
	switch {
	case req.Token != "":
		tok, err := h.verifySubscribeToken(req.Token)
		if err != nil {
			return err
		}
		if tok.Channel != ch || tok.UserID != user || (tok.Client != "" && tok.Client != c.id) {
			return DisconnectInvalidToken
		}
		opts = tokenSubscribeOptions(o, tok.Override)
		opts.ExpireAt, opts.ChanInfo, opts.Data = tok.ExpireAt, tok.Info, tok.Data
		allowed = true
	case h.rules.isPrivate(ch) || o.SubscribeTokenRequired:
		if h.cfg.Callbacks.OnSubscribe == nil {
			return ErrorPermissionDenied
		}
	case userLimited && h.rules.userAllowed(ch, user):
		allowed = true
	case o.AllowSubscribeForClient && (user != "" || o.AllowSubscribeForAnonymous) && !userLimited:
		allowed = true
	case h.cfg.Insecure:
		allowed = true
	}
	if o.history() {
		if req.Positioned && (o.AllowPositioning || h.historyAccess(o, user, true, false)) {
			opts.Positioning = true
		}
		if req.Recoverable && (o.AllowRecovery || h.historyAccess(o, user, true, false)) {
			opts.Recovery = true
		}
	}
	if req.JoinLeave && o.JoinLeave && h.presenceAccess(o, user, true, false) {
		opts.PushJoinLeave = true
	}
	if cb := h.cfg.Callbacks.OnSubscribe; cb != nil {
		r, err := cb(ctx, c, SubscribeEvent{Channel: ch, Token: req.Token, Data: req.Data, Allowed: allowed, Options: opts})
		if err != nil {
			return err
		}
		if r.Options != nil {
			opts = *r.Options
		}
	} else if !allowed {
		return ErrorPermissionDenied
	}
	if opts.ExpireAt > 0 && opts.ExpireAt <= time.Now().Unix() {
		return ErrorExpired
	}
	return h.subscribe(ctx, c, ch, o, opts, req, false, reply)
}

func defaultSubscribeOptions(o *ChannelOptions) SubscribeOptions {
	return SubscribeOptions{
		Presence:      o.Presence,
		JoinLeave:     o.JoinLeave,
		PushJoinLeave: o.ForcePushJoinLeave,
		Recovery:      o.ForceRecovery,
		Positioning:   o.ForcePositioning,
	}
}

func tokenSubscribeOptions(o *ChannelOptions, ov Override) SubscribeOptions {
	opts := defaultSubscribeOptions(o)
	set := func(dst *bool, v *bool) {
		if v != nil {
			*dst = *v
		}
	}
	set(&opts.Presence, ov.Presence)
	set(&opts.JoinLeave, ov.JoinLeave)
	set(&opts.PushJoinLeave, ov.ForcePushJoinLeave)
	set(&opts.Recovery, ov.ForceRecovery)
	set(&opts.Positioning, ov.ForcePositioning)
	return opts
}

func (h *Hub) verifySubscribeToken(token string) (SubscribeToken, error) {
	if h.cfg.Tokens == nil {
		return SubscribeToken{}, ErrorPermissionDenied
	}
	tok, err := h.cfg.Tokens.VerifySubscribeToken(token)
	switch {
	case err == nil:
		return tok, nil
	case errors.Is(err, ErrTokenExpired):
		return tok, ErrorTokenExpired
	case errors.Is(err, ErrInvalidToken):
		return tok, ErrorPermissionDenied
	}
	h.log.Error("hub: verifying a subscription token", "err", err)
	return tok, ErrorInternal
}

// access reports whether a client may use a feature of a namespace, by
// Centrifugo's rule: "for client" (any authenticated client, anonymous
// ones too with "for anonymous") or "for subscriber" (subscribed clients).
func (h *Hub) access(forClient, forSubscriber, forAnonymous bool, user string, subscribed bool) bool {
	anonOK := user != "" || forAnonymous
	switch {
	case forClient && anonOK:
		return true
	case forSubscriber && subscribed && anonOK:
		return true
	}
	return h.cfg.Insecure
}

func (h *Hub) historyAccess(o *ChannelOptions, user string, subscribed, _ bool) bool {
	return h.access(o.AllowHistoryForClient, o.AllowHistoryForSubscriber, o.AllowHistoryForAnonymous, user, subscribed)
}

func (h *Hub) presenceAccess(o *ChannelOptions, user string, subscribed, _ bool) bool {
	return h.access(o.AllowPresenceForClient, o.AllowPresenceForSubscriber, o.AllowPresenceForAnonymous, user, subscribed)
}

// subscribe makes a subscription: reserve, read the stream, reply, go
// live, publish the join.
func (h *Hub) subscribe(ctx context.Context, c *Client, ch string, o *ChannelOptions, opts SubscribeOptions, req SubscribeRequest, serverSide bool, reply func(*SubscribeResult) error) error {
	s, err := h.reserve(ctx, c, ch, o, opts, serverSide)
	if err != nil {
		return err
	}
	res, err := h.prepare(ctx, s, o, opts, req)
	if err == nil {
		err = reply(res)
	}
	if err != nil {
		h.endSubscription(s)
		return err
	}
	h.commit(ctx, s)
	return nil
}

// reserve adds a pending subscription of c to ch: from now on the
// channel's publications are kept for it until commit.
func (h *Hub) reserve(ctx context.Context, c *Client, name string, o *ChannelOptions, opts SubscribeOptions, serverSide bool) (*subscription, error) {
	s := &subscription{client: c, chanInfo: opts.ChanInfo}
	if o.history() {
		if opts.Positioning || opts.Recovery {
			s.flags |= flagPositioned
		}
		if opts.Recovery {
			s.flags |= flagRecoverable
		}
	}
	if opts.Presence {
		s.flags |= flagPresence
	}
	if opts.JoinLeave {
		s.flags |= flagEmitJoinLeave
	}
	if opts.PushJoinLeave {
		s.flags |= flagPushJoinLeave
	}
	if serverSide {
		s.flags |= flagServerSide
	}
	s.expireAt.Store(opts.ExpireAt)
	ch := h.acquireChannel(name, o)
	s.ch = ch
	c.mu.Lock()
	switch {
	case c.state == stateClosed || c.closing:
		c.mu.Unlock()
		h.releaseChannel(ctx, ch, nil)
		return nil, DisconnectConnectionClosed
	case c.subLocked(name) != nil:
		c.mu.Unlock()
		h.releaseChannel(ctx, ch, nil)
		return nil, ErrorAlreadySubscribed
	case len(c.subs) >= h.cfg.ClientChannelLimit:
		c.mu.Unlock()
		h.releaseChannel(ctx, ch, nil)
		if serverSide {
			return nil, DisconnectChannelLimit
		}
		return nil, ErrorLimitExceeded
	}
	c.subs = append(c.subs, s)
	c.mu.Unlock()
	ch.add(s)
	h.stats.subs.Add(1)
	if err := h.brokerSubscribe(ctx, ch); err != nil {
		h.log.Error("hub: broker subscribe", "channel", name, "err", err)
		h.endSubscription(s)
		return nil, DisconnectServerError
	}
	return s, nil
}

// prepare reads what the subscription needs from the broker: presence,
// the stream position, recovered publications.
func (h *Hub) prepare(ctx context.Context, s *subscription, o *ChannelOptions, opts SubscribeOptions, req SubscribeRequest) (*SubscribeResult, error) {
	ch := s.ch.name
	res := &SubscribeResult{Data: opts.Data}
	if exp := opts.ExpireAt; exp > 0 {
		res.Expires = true
		res.TTL = uint32(max(exp-time.Now().Unix(), 0))
	}
	if s.has(flagPresence) {
		if err := h.presence.AddPresence(ctx, ch, s.client.clientInfo(s.chanInfo)); err != nil {
			h.log.Error("hub: adding presence", "channel", ch, "err", err)
			return nil, DisconnectServerError
		}
	}
	if !s.has(flagPositioned) {
		return res, nil
	}
	res.Positioned = true
	res.Recoverable = s.has(flagRecoverable)
	hopts := broker.HistoryOptions{MetaTTL: o.HistoryMetaTTL}
	recovering := s.has(flagRecoverable) && req.Recover
	if recovering {
		hopts.Since = &broker.StreamPosition{Offset: req.Offset, Epoch: req.Epoch}
		hopts.Limit = -1
		if l := h.cfg.RecoveryMaxPublicationLimit; l > 0 {
			hopts.Limit = l
		}
	}
	pubs, top, err := h.broker.History(ctx, ch, hopts)
	if err != nil {
		h.log.Error("hub: reading the stream", "channel", ch, "err", err)
		return nil, DisconnectServerError
	}
	res.Epoch, res.Offset = top.Epoch, top.Offset
	s.epoch = top.Epoch
	s.offset.Store(top.Offset)
	if recovering {
		res.WasRecovering = true
		if recovered(pubs, top, req.Offset, req.Epoch) {
			res.Recovered = true
			res.Publications = pubs
			// Centrifugo answers the requested position: the client
			// advances by applying the recovered publications.
			res.Offset = req.Offset
		} else if req.RejectUnrecovered {
			return nil, ErrorUnrecoverablePosition
		}
	}
	return res, nil
}

// recovered applies Centrifugo's rule: the stream has the same epoch and
// holds every publication after offset, up to its top.
func recovered(pubs []*broker.Publication, top broker.StreamPosition, offset uint64, epoch string) bool {
	if epoch != "" && epoch != top.Epoch {
		return false
	}
	if len(pubs) == 0 {
		return top.Offset == offset
	}
	return pubs[0].Offset == offset+1 && pubs[len(pubs)-1].Offset == top.Offset
}

// commit writes what was published while s was pending and makes it live,
// then publishes the join.
func (h *Hub) commit(ctx context.Context, s *subscription) {
	s.mu.Lock()
	buf, overflow := s.buf, s.overflow
	s.buf = nil
	ok := !overflow
	var delivered uint64
	if ok {
		for _, p := range buf {
			take, gap := s.accept(p.pub, p.sp)
			if gap {
				ok = false
				break
			}
			if take {
				if b, err := s.client.codec.EncodePublication(s.ch.name, p.pub); err == nil && s.client.write(b) == nil {
					delivered++
				}
			}
		}
	}
	// Publications kept while pending are deliveries too, counted when
	// they go out.
	h.stats.deliveries.Add(delivered)
	live := ok && s.state.CompareAndSwap(subPending, subLive)
	if live {
		s.wasLive.Store(true)
	}
	s.mu.Unlock()
	if !ok {
		h.insufficient(s)
		return
	}
	if live && s.has(flagEmitJoinLeave) {
		if err := h.broker.PublishJoin(ctx, s.ch.name, s.client.clientInfo(s.chanInfo)); err != nil {
			h.log.Warn("hub: publishing a join", "channel", s.ch.name, "err", err)
		}
	}
}

// accept checks a publication against a positioned subscription and moves
// its position. take says whether to send it; gap that publications were
// lost (the subscription can no longer continue).
func (s *subscription) accept(pub *broker.Publication, sp broker.StreamPosition) (take, gap bool) {
	if !s.has(flagPositioned) {
		return true, false
	}
	if sp.Epoch != s.epoch {
		return false, true
	}
	next := s.offset.Load() + 1
	switch {
	case pub.Offset > next:
		return false, true
	case pub.Offset < next:
		return false, false // already sent (recovered, or a repeat)
	}
	s.offset.Store(pub.Offset)
	return true, false
}

// insufficient ends a subscription that lost publications, as Centrifugo
// does: a client-side subscription gets an unsubscribe push with
// UnsubscribeInsufficientState (the client resubscribes and recovers), a
// server-side one closes the connection with DisconnectInsufficientState.
func (h *Hub) insufficient(s *subscription) {
	if !s.state.CompareAndSwap(subLive, subGone) && !s.state.CompareAndSwap(subPending, subGone) {
		return
	}
	h.stats.insufficient.Add(1)
	if s.has(flagServerSide) {
		s.client.Disconnect(DisconnectInsufficientState)
		return
	}
	h.unsubscribePush(s, UnsubscribeInsufficientState)
}

// unsubscribePush tells the client its subscription ended and ends it.
func (h *Hub) unsubscribePush(s *subscription, u Unsubscribe) {
	s.state.Store(subGone)
	if b, err := s.client.codec.EncodeUnsubscribe(s.ch.name, u); err == nil {
		s.client.write(b)
	}
	if !h.Go(func() { h.endSubscription(s) }) {
		h.endSubscription(s)
	}
}

// endSubscription removes s from its client and channel, its presence
// entry, and publishes its leave when it was live.
func (h *Hub) endSubscription(s *subscription) {
	s.state.Store(subGone)
	c := s.client
	c.mu.Lock()
	for i, x := range c.subs {
		if x == s {
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			break
		}
	}
	c.mu.Unlock()
	ch := s.ch
	if !h.releaseChannel(h.life, ch, s) {
		return // already ended
	}
	h.stats.subs.Add(-1)
	ctx := context.WithoutCancel(h.life)
	if s.has(flagPresence) {
		if err := h.presence.RemovePresence(ctx, ch.name, c.id, c.UserID()); err != nil {
			h.log.Warn("hub: removing presence", "channel", ch.name, "err", err)
		}
	}
	if s.has(flagEmitJoinLeave) && s.wasLive.Load() {
		if err := h.broker.PublishLeave(ctx, ch.name, c.clientInfo(s.chanInfo)); err != nil {
			h.log.Warn("hub: publishing a leave", "channel", ch.name, "err", err)
		}
	}
}

// Unsubscribe ends c's subscription to ch, as a client's unsubscribe
// request does. Unsubscribing from a channel the client is not
// subscribed to succeeds.
func (h *Hub) Unsubscribe(ctx context.Context, c *Client, ch string) error {
	if ch == "" {
		return DisconnectBadRequest
	}
	c.mu.Lock()
	s := c.subLocked(ch)
	c.mu.Unlock()
	if s != nil {
		h.endSubscription(s)
	}
	return nil
}

// acquireChannel returns the channel named name, creating it, and counts
// one more reference.
func (h *Hub) acquireChannel(name string, o *ChannelOptions) *channel {
	sh := h.chanShard(name)
	sh.mu.Lock()
	ch := sh.chans[name]
	if ch == nil {
		ch = &channel{name: name, opts: o}
		sh.chans[name] = ch
		h.stats.channels.Add(1)
	}
	ch.mu.Lock()
	ch.refs++
	ch.mu.Unlock()
	sh.mu.Unlock()
	return ch
}

func (ch *channel) add(s *subscription) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	ch.arr = append(ch.arr, s)
	view := ch.arr[:len(ch.arr):len(ch.arr)]
	ch.subs.Store(&view)
}

// live returns the number of subscriptions in the channel.
func (ch *channel) live() int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return len(ch.arr) - ch.dead
}

// releaseChannel drops s (when not nil) and one reference; the last one
// removes the channel and unsubscribes the broker. It reports false when
// s was not in the channel.
func (h *Hub) releaseChannel(ctx context.Context, ch *channel, s *subscription) bool {
	sh := h.chanShard(ch.name)
	sh.mu.Lock()
	ch.mu.Lock()
	if s != nil {
		if s.removed {
			ch.mu.Unlock()
			sh.mu.Unlock()
			return false
		}
		s.removed = true
		ch.dead++
		if ch.dead > 16 && ch.dead*2 > len(ch.arr) {
			next := make([]*subscription, 0, max(len(ch.arr)-ch.dead, 4))
			for _, x := range ch.arr {
				if !x.removed {
					next = append(next, x)
				}
			}
			ch.arr, ch.dead = next, 0
			view := next[:len(next):len(next)]
			ch.subs.Store(&view)
		}
	}
	ch.refs--
	last := ch.refs == 0
	if last {
		ch.gone = true
		delete(sh.chans, ch.name)
		h.stats.channels.Add(-1)
	}
	ch.mu.Unlock()
	sh.mu.Unlock()
	if last {
		h.brokerUnsubscribe(ctx, ch)
	}
	return true
}

// brokerSubscribe makes the broker deliver ch to this node.
func (h *Hub) brokerSubscribe(ctx context.Context, ch *channel) error {
	mu := h.brokerLock(ch.name)
	mu.Lock()
	defer mu.Unlock()
	if ch.subscribed {
		return nil
	}
	if err := h.broker.Subscribe(ctx, ch.name); err != nil {
		return err
	}
	ch.subscribed = true
	return nil
}

// brokerUnsubscribe stops the broker's deliveries of a removed channel,
// unless a new channel of the same name took over meanwhile.
func (h *Hub) brokerUnsubscribe(ctx context.Context, ch *channel) {
	mu := h.brokerLock(ch.name)
	mu.Lock()
	defer mu.Unlock()
	if !ch.subscribed {
		return
	}
	ch.subscribed = false
	sh := h.chanShard(ch.name)
	sh.mu.RLock()
	successor := sh.chans[ch.name]
	sh.mu.RUnlock()
	if successor != nil {
		// The successor subscribes (or did) under this lock; the broker's
		// subscription stays.
		successor.subscribed = true
		return
	}
	if err := h.broker.Unsubscribe(context.WithoutCancel(ctx), ch.name); err != nil {
		h.log.Warn("hub: broker unsubscribe", "channel", ch.name, "err", err)
	}
}
