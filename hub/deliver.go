package hub

import (
	"context"
	"time"

	"github.com/wsgate/wsgate/broker"
)

var _ broker.EventHandler = (*Hub)(nil)

// lookupChannel returns the live channel named name, or nil.
func (h *Hub) lookupChannel(name string) *channel {
	sh := h.chanShard(name)
	sh.mu.RLock()
	ch := sh.chans[name]
	sh.mu.RUnlock()
	return ch
}

// HandlePublication fans a publication out to the channel's subscribers on
// this node (broker.EventHandler). It is encoded once per codec, and the
// same frame goes to every subscriber; nothing is allocated per
// subscriber. Positioned subscriptions check the offset: a gap ends them
// with the insufficient state treatment.
func (h *Hub) HandlePublication(name string, pub *broker.Publication, sp broker.StreamPosition) {
	ch := h.lookupChannel(name)
	if ch == nil {
		return
	}
	subs := ch.subs.Load()
	if subs == nil {
		return
	}
	var cache codecCache
	var delivered uint64
	for _, s := range *subs {
		switch s.state.Load() {
		case subGone:
			continue
		case subPending:
			if s.keep(pub, sp, h.cfg.SyncBufferLimit) {
				continue
			}
			if s.state.Load() != subLive {
				continue // gone meanwhile
			}
		}
		take, gap := s.accept(pub, sp)
		if gap {
			h.insufficient(s)
			continue
		}
		if !take {
			continue
		}
		pm := cache.get(s.client.codec, func(c Codec) ([]byte, error) { return c.EncodePublication(name, pub) })
		if pm == nil {
			s.client.Disconnect(DisconnectInappropriateProtocol)
			continue
		}
		if s.client.enqueuePrepared(pm) {
			delivered++
		}
	}
	h.stats.deliveries.Add(delivered)
	if f := h.cfg.OnFanout; f != nil && pub.Time > 0 {
		f(int(delivered), time.Since(time.UnixMilli(pub.Time)))
	}
}

// keep stores a publication for a pending subscription and reports true;
// it reports false when s is no longer pending.
func (s *subscription) keep(pub *broker.Publication, sp broker.StreamPosition, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state.Load() != subPending {
		return false
	}
	if len(s.buf) >= limit {
		s.overflow = true
		s.buf = nil
		return true
	}
	if !s.overflow {
		s.buf = append(s.buf, pendingPub{pub, sp})
	}
	return true
}

// HandleJoin sends a join push to the subscribers who asked for them.
func (h *Hub) HandleJoin(name string, info *broker.ClientInfo) {
	h.stats.joins.Add(1)
	h.pushPresence(name, func(c Codec) ([]byte, error) { return c.EncodeJoin(name, info) })
}

// HandleLeave sends a leave push to the subscribers who asked for them.
func (h *Hub) HandleLeave(name string, info *broker.ClientInfo) {
	h.stats.leaves.Add(1)
	h.pushPresence(name, func(c Codec) ([]byte, error) { return c.EncodeLeave(name, info) })
}

func (h *Hub) pushPresence(name string, enc func(Codec) ([]byte, error)) {
	ch := h.lookupChannel(name)
	if ch == nil {
		return
	}
	subs := ch.subs.Load()
	if subs == nil {
		return
	}
	var cache codecCache
	for _, s := range *subs {
		if !s.has(flagPushJoinLeave) || s.state.Load() != subLive {
			continue
		}
		if pm := cache.get(s.client.codec, enc); pm != nil {
			s.client.enqueuePrepared(pm)
		}
	}
}

// HandleGap checks the positioned subscribers of the given channels (every
// channel when nil) against their streams at once: a subscriber behind the
// stream's top, or in another epoch, gets the insufficient state
// treatment. The check runs on a hub goroutine.
func (h *Hub) HandleGap(channels []string) {
	var chans []*channel
	if channels == nil {
		chans = h.allChannels()
	} else {
		for _, name := range channels {
			if ch := h.lookupChannel(name); ch != nil {
				chans = append(chans, ch)
			}
		}
	}
	h.Go(func() {
		for _, ch := range chans {
			h.checkPositions(h.life, ch, true)
		}
	})
}

func (h *Hub) allChannels() []*channel {
	var out []*channel
	for i := range h.chans {
		sh := &h.chans[i]
		sh.mu.RLock()
		for _, ch := range sh.chans {
			out = append(out, ch)
		}
		sh.mu.RUnlock()
	}
	return out
}

// checkPositions compares the channel's positioned live subscribers with
// the stream. now says whether being behind the current top is already a
// gap (after a reported loss); otherwise a subscriber is behind only if it
// has not reached the top seen at the previous check, which leaves a whole
// interval for publications in flight.
func (h *Hub) checkPositions(ctx context.Context, ch *channel, now bool) {
	subs := ch.subs.Load()
	if subs == nil {
		return
	}
	positioned := false
	for _, s := range *subs {
		if s.has(flagPositioned) && s.state.Load() == subLive {
			positioned = true
			break
		}
	}
	if !positioned {
		return
	}
	_, top, err := h.broker.History(ctx, ch.name, broker.HistoryOptions{MetaTTL: ch.opts.HistoryMetaTTL})
	if err != nil {
		h.log.Warn("hub: position check", "channel", ch.name, "err", err)
		return
	}
	ch.mu.Lock()
	prevEpoch, prevOffset := ch.checkEpoch, ch.checkOffset
	ch.checkEpoch, ch.checkOffset = top.Epoch, top.Offset
	ch.mu.Unlock()
	for _, s := range *subs {
		if !s.has(flagPositioned) || s.state.Load() != subLive {
			continue
		}
		lost := s.epoch != top.Epoch
		if !lost {
			off := s.offset.Load()
			if now {
				lost = off < top.Offset
			} else {
				lost = prevEpoch == top.Epoch && off < prevOffset
			}
		}
		if lost {
			h.insufficient(s)
		}
	}
}
