package hub

import (
	"time"
)

// tickInterval is how often the client ticker looks at every client.
const tickInterval = time.Second

// clientTicker runs every client's periodic work: application pings, pong
// and expiry checks, closing connections that never connected. One
// goroutine for all clients: each look is a few comparisons of timestamps.
func (h *Hub) clientTicker() {
	defer h.tickers.Done()
	defer h.recoverPanic("client ticker")
	t := time.NewTicker(h.clientTick())
	defer t.Stop()
	var batch []*Client
	for {
		select {
		case <-h.life.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		for i := range h.clients {
			batch = h.clients[i].snapshot(batch[:0])
			for _, c := range batch {
				h.tickClient(c, now)
			}
		}
		clear(batch)
	}
}

// clientTick is the client ticker's period: at most a second, finer when
// the configured intervals are shorter (tests).
func (h *Hub) clientTick() time.Duration {
	d := tickInterval
	for _, iv := range []time.Duration{h.cfg.PingInterval, h.cfg.PongTimeout, h.cfg.StaleCloseDelay, h.cfg.ExpiredCloseDelay} {
		if iv > 0 && iv/4 < d {
			d = iv / 4
		}
	}
	return max(d, 5*time.Millisecond)
}

func (h *Hub) tickClient(c *Client, now time.Time) {
	ns := now.UnixNano()
	var d *Disconnect
	var ping bool
	var expiredSubs []*subscription
	c.mu.Lock()
	switch {
	case c.closing || c.state == stateClosed:
	case c.state == stateNew:
		if ns-c.createdAt > int64(h.cfg.StaleCloseDelay) {
			d = &DisconnectStale
		}
	default:
		if c.pongDue != 0 && ns > c.pongDue {
			d = &DisconnectNoPong
			break
		}
		if c.expireAt > 0 && now.Unix() > c.expireAt+int64(h.cfg.ExpiredCloseDelay/time.Second) {
			d = &DisconnectExpired
			break
		}
		if c.nextPing != 0 && ns >= c.nextPing {
			ping = true
			c.nextPing = ns + int64(h.cfg.PingInterval)
			if h.cfg.PongTimeout > 0 && !c.pinged {
				c.pinged = true
				c.pongDue = ns + int64(h.cfg.PongTimeout)
			}
		}
		for _, s := range c.subs {
			if exp := s.expireAt.Load(); exp > 0 && now.Unix() > exp+int64(h.cfg.ExpiredCloseDelay/time.Second) && s.state.Load() == subLive {
				expiredSubs = append(expiredSubs, s)
			}
		}
	}
	c.mu.Unlock()
	if d != nil {
		c.Disconnect(*d)
		return
	}
	if ping {
		if pm := h.pingOf(c.codec); pm != nil {
			c.writePrepared(pm)
		}
	}
	for _, s := range expiredSubs {
		if s.has(flagServerSide) {
			c.Disconnect(DisconnectSubExpired)
			return
		}
		if s.state.CompareAndSwap(subLive, subGone) {
			h.unsubscribePush(s, UnsubscribeExpired)
		}
	}
}

// channelTicker refreshes presence entries and checks the positions of
// positioned subscriptions, channel by channel.
func (h *Hub) channelTicker() {
	defer h.tickers.Done()
	defer h.recoverPanic("channel ticker")
	period := min(h.cfg.PresenceUpdateInterval, h.cfg.PositionCheckInterval)
	t := time.NewTicker(max(period/4, 5*time.Millisecond))
	defer t.Stop()
	nextPresence := time.Now().Add(h.cfg.PresenceUpdateInterval)
	nextCheck := time.Now().Add(h.cfg.PositionCheckInterval)
	for {
		select {
		case <-h.life.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		presence := now.After(nextPresence)
		check := now.After(nextCheck)
		if presence {
			nextPresence = now.Add(h.cfg.PresenceUpdateInterval)
		}
		if check {
			nextCheck = now.Add(h.cfg.PositionCheckInterval)
		}
		if !presence && !check {
			continue
		}
		for _, ch := range h.allChannels() {
			if h.life.Err() != nil {
				return
			}
			if presence {
				h.refreshPresence(ch)
			}
			if check && ch.opts.history() {
				h.checkPositions(h.life, ch, false)
			}
		}
	}
}

// refreshPresence renews the presence entries of ch's subscribers, so that
// they outlive the presence manager's TTL while connected (and those of a
// dead node do not).
func (h *Hub) refreshPresence(ch *channel) {
	subs := ch.subs.Load()
	if subs == nil {
		return
	}
	for _, s := range *subs {
		if !s.has(flagPresence) || s.state.Load() != subLive {
			continue
		}
		if err := h.presence.AddPresence(h.life, ch.name, s.client.clientInfo(s.chanInfo)); err != nil {
			h.log.Warn("hub: refreshing presence", "channel", ch.name, "err", err)
			return
		}
	}
}
