package hub

import (
	"context"
	"path"
	"sync"

	"github.com/wsgate/wsgate/broker"
)

// PublishOptions alter a server-side publication.
type PublishOptions struct {
	// Tags are delivered with the publication.
	Tags map[string]string
	// IdempotencyKey makes repeated publishes with the same key (within
	// the broker's window) publish once.
	IdempotencyKey string
	// SkipHistory publishes without keeping the publication in history.
	SkipHistory bool
	// ClientInfo is the publisher, when publishing on a client's behalf.
	ClientInfo *broker.ClientInfo
}

// Publish publishes data to ch from the server side: the channel's
// namespace gives its history options. It returns the publication's
// stream position (zero without history).
func (h *Hub) Publish(ctx context.Context, ch string, data []byte, opts PublishOptions) (broker.StreamPosition, error) {
	if ch == "" {
		return broker.StreamPosition{}, ErrorBadRequest
	}
	o, rest, err := h.rules.resolve(ch)
	if err != nil {
		return broker.StreamPosition{}, err
	}
	if !h.rules.validName(ch, rest, o) {
		return broker.StreamPosition{}, ErrorBadRequest
	}
	return h.publish(ctx, ch, o, data, opts)
}

func (h *Hub) publish(ctx context.Context, ch string, o *ChannelOptions, data []byte, opts PublishOptions) (broker.StreamPosition, error) {
	bo := broker.PublishOptions{ClientInfo: opts.ClientInfo, Tags: opts.Tags, IdempotencyKey: opts.IdempotencyKey}
	if o.history() && !opts.SkipHistory {
		bo.HistorySize, bo.HistoryTTL, bo.HistoryMetaTTL = o.HistorySize, o.HistoryTTL, o.HistoryMetaTTL
	}
	sp, err := h.broker.Publish(ctx, ch, data, bo)
	if err != nil {
		h.log.Error("hub: publish", "channel", ch, "err", err)
		return sp, ErrorInternal
	}
	h.stats.publications.Add(1)
	return sp, nil
}

// PublishResult is the outcome of publishing to one channel of a
// broadcast.
type PublishResult struct {
	Position broker.StreamPosition
	Err      error
}

// broadcastConcurrency bounds the channels a Broadcast publishes to at
// once.
const broadcastConcurrency = 64

// Broadcast publishes data to every channel of chs, concurrently, and
// returns one result per channel in the same order.
func (h *Hub) Broadcast(ctx context.Context, chs []string, data []byte, opts PublishOptions) ([]PublishResult, error) {
	if len(chs) == 0 {
		return nil, ErrorBadRequest
	}
	out := make([]PublishResult, len(chs))
	if len(chs) == 1 {
		out[0].Position, out[0].Err = h.Publish(ctx, chs[0], data, opts)
		return out, nil
	}
	sem := make(chan struct{}, broadcastConcurrency)
	var wg sync.WaitGroup
	for i, ch := range chs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i].Position, out[i].Err = h.Publish(ctx, ch, data, opts)
		}()
	}
	wg.Wait()
	return out, nil
}

// ClientPublish publishes data to ch on behalf of c, as a client's publish
// request does: the namespace must allow it (or OnPublish), and the
// publication carries the client's info.
func (h *Hub) ClientPublish(ctx context.Context, c *Client, ch string, data []byte) error {
	if ch == "" {
		return DisconnectBadRequest
	}
	o, rest, err := h.rules.resolve(ch)
	if err != nil {
		return err
	}
	if !h.rules.validName(ch, rest, o) {
		return ErrorBadRequest
	}
	c.mu.Lock()
	s := c.subLocked(ch)
	user := c.user
	c.mu.Unlock()
	allowed := h.access(o.AllowPublishForClient, o.AllowPublishForSubscriber, o.AllowPublishForAnonymous, user, s != nil)
	opts := PublishOptions{}
	if cb := h.cfg.Callbacks.OnPublish; cb != nil {
		r, err := cb(ctx, c, PublishEvent{Channel: ch, Data: data, Allowed: allowed})
		if err != nil {
			return err
		}
		if r.Data != nil {
			data = r.Data
		}
		opts.SkipHistory = r.SkipHistory
	} else if !allowed {
		return ErrorPermissionDenied
	}
	if len(data) == 0 {
		// Centrifugo's default publication data format refuses empty data.
		return ErrorBadRequest
	}
	var chanInfo []byte
	if s != nil {
		chanInfo = s.chanInfo
	}
	opts.ClientInfo = c.clientInfo(chanInfo)
	_, err = h.publish(ctx, ch, o, data, opts)
	return err
}

// presenceChannel resolves ch for a presence request.
func (h *Hub) presenceChannel(ch string) (*ChannelOptions, error) {
	if ch == "" {
		return nil, ErrorBadRequest
	}
	o, rest, err := h.rules.resolve(ch)
	if err != nil {
		return nil, err
	}
	if !h.rules.validName(ch, rest, o) {
		return nil, ErrorBadRequest
	}
	if !o.Presence {
		return nil, ErrorNotAvailable
	}
	return o, nil
}

// Presence returns ch's presence by client ID (server side: no permission
// check, but the namespace must keep presence).
func (h *Hub) Presence(ctx context.Context, ch string) (map[string]*broker.ClientInfo, error) {
	if _, err := h.presenceChannel(ch); err != nil {
		return nil, err
	}
	p, err := h.presence.Presence(ctx, ch)
	if err != nil {
		h.log.Error("hub: presence", "channel", ch, "err", err)
		return nil, ErrorInternal
	}
	return p, nil
}

// PresenceStats counts ch's clients and users (server side).
func (h *Hub) PresenceStats(ctx context.Context, ch string) (broker.PresenceStats, error) {
	if _, err := h.presenceChannel(ch); err != nil {
		return broker.PresenceStats{}, err
	}
	st, err := h.presence.PresenceStats(ctx, ch)
	if err != nil {
		h.log.Error("hub: presence stats", "channel", ch, "err", err)
		return st, ErrorInternal
	}
	return st, nil
}

func (h *Hub) clientPresenceCheck(c *Client, ch string) error {
	if ch == "" {
		return DisconnectBadRequest
	}
	o, err := h.presenceChannel(ch)
	if err != nil {
		return err
	}
	if !h.presenceAccess(o, c.UserID(), c.IsSubscribed(ch), false) {
		return ErrorPermissionDenied
	}
	return nil
}

// ClientPresence answers a client's presence request.
func (h *Hub) ClientPresence(ctx context.Context, c *Client, ch string) (map[string]*broker.ClientInfo, error) {
	if err := h.clientPresenceCheck(c, ch); err != nil {
		return nil, err
	}
	return h.Presence(ctx, ch)
}

// ClientPresenceStats answers a client's presence stats request.
func (h *Hub) ClientPresenceStats(ctx context.Context, c *Client, ch string) (broker.PresenceStats, error) {
	if err := h.clientPresenceCheck(c, ch); err != nil {
		return broker.PresenceStats{}, err
	}
	return h.PresenceStats(ctx, ch)
}

// HistoryRequest selects publications of a channel's stream.
type HistoryRequest struct {
	// Limit bounds the publications: 0 returns only the position, -1 all.
	Limit int
	// Since, when set, returns the publications after it (before it with
	// Reverse); its epoch must be the stream's.
	Since   *broker.StreamPosition
	Reverse bool
}

// HistoryResult is a page of a channel's stream and its position.
type HistoryResult struct {
	Publications []*broker.Publication
	broker.StreamPosition
}

// History reads ch's stream (server side), with Centrifugo's rules:
// ErrorNotAvailable without history, ErrorBadRequest for a reverse read
// since offset 0, ErrorUnrecoverablePosition when Since is from another
// epoch.
func (h *Hub) History(ctx context.Context, ch string, req HistoryRequest) (HistoryResult, error) {
	if ch == "" {
		return HistoryResult{}, ErrorBadRequest
	}
	o, rest, err := h.rules.resolve(ch)
	if err != nil {
		return HistoryResult{}, err
	}
	if !h.rules.validName(ch, rest, o) {
		return HistoryResult{}, ErrorBadRequest
	}
	if !o.history() {
		return HistoryResult{}, ErrorNotAvailable
	}
	return h.history(ctx, ch, o, req)
}

func (h *Hub) history(ctx context.Context, ch string, o *ChannelOptions, req HistoryRequest) (HistoryResult, error) {
	if req.Reverse && req.Since != nil && req.Since.Offset == 0 {
		return HistoryResult{}, ErrorBadRequest
	}
	pubs, top, err := h.broker.History(ctx, ch, broker.HistoryOptions{Limit: req.Limit, Since: req.Since, Reverse: req.Reverse, MetaTTL: o.HistoryMetaTTL})
	if err != nil {
		h.log.Error("hub: history", "channel", ch, "err", err)
		return HistoryResult{}, ErrorInternal
	}
	if req.Since != nil && req.Since.Epoch != "" && req.Since.Epoch != top.Epoch {
		return HistoryResult{StreamPosition: top}, ErrorUnrecoverablePosition
	}
	return HistoryResult{Publications: pubs, StreamPosition: top}, nil
}

// ClientHistory answers a client's history request.
func (h *Hub) ClientHistory(ctx context.Context, c *Client, ch string, req HistoryRequest) (HistoryResult, error) {
	if ch == "" {
		return HistoryResult{}, DisconnectBadRequest
	}
	o, rest, err := h.rules.resolve(ch)
	if err != nil {
		return HistoryResult{}, err
	}
	if !h.rules.validName(ch, rest, o) {
		return HistoryResult{}, ErrorBadRequest
	}
	if !o.history() {
		return HistoryResult{}, ErrorNotAvailable
	}
	if !h.historyAccess(o, c.UserID(), c.IsSubscribed(ch), false) {
		return HistoryResult{}, ErrorPermissionDenied
	}
	if l := h.cfg.HistoryMaxPublicationLimit; l > 0 && (req.Limit < 0 || req.Limit > l) {
		req.Limit = l
	}
	return h.history(ctx, ch, o, req)
}

// RemoveHistory deletes ch's publications (its position stays).
func (h *Hub) RemoveHistory(ctx context.Context, ch string) error {
	if ch == "" {
		return ErrorBadRequest
	}
	o, _, err := h.rules.resolve(ch)
	if err != nil {
		return err
	}
	if !o.history() {
		return ErrorNotAvailable
	}
	if err := h.broker.RemoveHistory(ctx, ch); err != nil {
		h.log.Error("hub: remove history", "channel", ch, "err", err)
		return ErrorInternal
	}
	return nil
}

// RPC answers a client's RPC call with OnRPC.
func (h *Hub) RPC(ctx context.Context, c *Client, method string, data []byte) ([]byte, error) {
	cb := h.cfg.Callbacks.OnRPC
	if cb == nil {
		return nil, ErrorNotAvailable
	}
	r, err := cb(ctx, c, RPCEvent{Method: method, Data: data})
	if err != nil {
		return nil, err
	}
	return r.Data, nil
}

// Message hands a client's asynchronous message to OnMessage.
func (h *Hub) Message(ctx context.Context, c *Client, data []byte) error {
	cb := h.cfg.Callbacks.OnMessage
	if cb == nil {
		return DisconnectNotAvailable
	}
	cb(ctx, c, data)
	return nil
}

// ServerSubscribeOptions alter a server-side subscription made through
// SubscribeUser.
type ServerSubscribeOptions struct {
	// Client, when set, subscribes only this connection of the user.
	Client string
	// Override changes the namespace's options for this subscription.
	Override Override
	ExpireAt int64
	ChanInfo []byte
	Data     []byte
	// RecoverSince recovers the publications after this position.
	RecoverSince *broker.StreamPosition
}

// SubscribeUser subscribes the user's connections on this node to ch on
// the server's initiative; each gets a subscribe push. Centrifugo's
// server API subscribe.
func (h *Hub) SubscribeUser(ctx context.Context, user, ch string, opts ServerSubscribeOptions) error {
	if ch == "" {
		return ErrorBadRequest
	}
	o, rest, err := h.rules.resolve(ch)
	if err != nil {
		return err
	}
	if !h.rules.validName(ch, rest, o) {
		return ErrorBadRequest
	}
	so := tokenSubscribeOptions(o, opts.Override)
	so.ExpireAt, so.ChanInfo, so.Data = opts.ExpireAt, opts.ChanInfo, opts.Data
	req := SubscribeRequest{Channel: ch}
	if opts.RecoverSince != nil {
		req.Recover, req.Epoch, req.Offset = true, opts.RecoverSince.Epoch, opts.RecoverSince.Offset
	}
	for _, c := range h.UserClients(user) {
		if opts.Client != "" && c.id != opts.Client {
			continue
		}
		err := h.subscribe(ctx, c, ch, o, so, req, true, func(res *SubscribeResult) error {
			b, err := c.codec.EncodeSubscribe(ch, res)
			if err != nil {
				return err
			}
			return c.write(b)
		})
		if err != nil && !isAlreadySubscribed(err) {
			if _, d := AsError(err); d != nil {
				c.Disconnect(*d)
			}
		}
	}
	return nil
}

func isAlreadySubscribed(err error) bool {
	e, _ := AsError(err)
	return e != nil && e.Code == ErrorAlreadySubscribed.Code
}

// UnsubscribeUser ends the user's subscriptions to ch (all of its
// subscriptions when ch is ""), on this node; each gets an unsubscribe
// push. client, when set, limits it to that connection.
func (h *Hub) UnsubscribeUser(ctx context.Context, user, ch, client string) error {
	if ch != "" {
		if _, _, err := h.rules.resolve(ch); err != nil {
			return err
		}
	}
	for _, c := range h.UserClients(user) {
		if client != "" && c.id != client {
			continue
		}
		c.mu.Lock()
		var subs []*subscription
		for _, s := range c.subs {
			if ch == "" || s.ch.name == ch {
				subs = append(subs, s)
			}
		}
		c.mu.Unlock()
		for _, s := range subs {
			if b, err := c.codec.EncodeUnsubscribe(s.ch.name, UnsubscribeServer); err == nil {
				c.write(b)
			}
			h.endSubscription(s)
		}
	}
	return nil
}

// DisconnectUser closes the user's connections on this node with d.
// client, when set, limits it to that connection; whitelist lists client
// IDs to spare.
func (h *Hub) DisconnectUser(ctx context.Context, user string, d Disconnect, client string, whitelist []string) error {
	for _, c := range h.UserClients(user) {
		if client != "" && c.id != client {
			continue
		}
		spared := false
		for _, id := range whitelist {
			if id == c.id {
				spared = true
			}
		}
		if !spared {
			c.Disconnect(d)
		}
	}
	return nil
}

// Channels returns the channels with subscribers on this node and how many
// connections each has, filtered by pattern (path.Match syntax; "" for
// all).
func (h *Hub) Channels(pattern string) (map[string]int, error) {
	if pattern != "" {
		if _, err := path.Match(pattern, ""); err != nil {
			return nil, ErrorBadRequest
		}
	}
	out := map[string]int{}
	for _, ch := range h.allChannels() {
		if pattern != "" {
			if ok, _ := path.Match(pattern, ch.name); !ok {
				continue
			}
		}
		if n := ch.live(); n > 0 {
			out[ch.name] = n
		}
	}
	return out, nil
}
