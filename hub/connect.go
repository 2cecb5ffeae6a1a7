package hub

import (
	"context"
	"errors"
	"time"
)

// ConnectRequest is a client's connect request.
type ConnectRequest struct {
	Token   string
	Data    []byte
	Name    string
	Version string
	Headers map[string]string
	// Subs carries the positions of server-side subscriptions the client
	// had, by channel, so that they recover (only Recover, Epoch and Offset
	// are used).
	Subs map[string]SubscribeRequest
}

// ConnectResult is the outcome of a connect.
type ConnectResult struct {
	ClientID string
	Expires  bool
	TTL      uint32 // seconds until the connection expires
	Data     []byte
	// Subs are the server-side subscriptions, by channel.
	Subs map[string]*SubscribeResult
	// Ping is the ping interval in seconds (0: no pings); Pong says the
	// client must answer pings.
	Ping uint32
	Pong bool
}

// maxTTL caps expiry times that are certainly mistakes (Centrifugo's).
const maxTTL = 365 * 24 * 3600

// Connect authenticates c, as a client's connect request does, with
// Centrifugo's rules: a token is verified (expired → ErrorTokenExpired,
// invalid → DisconnectInvalidToken); without one the connection is
// anonymous when Config.AllowAnonymous allows it; OnConnecting may
// authorize, reject or enrich. The token's channels (and those granted by
// OnConnecting) become server-side subscriptions. reply must write the
// result to the client; the server-side subscriptions go live after it.
func (h *Hub) Connect(ctx context.Context, c *Client, req ConnectRequest, reply func(*ConnectResult) error) error {
	c.mu.Lock()
	st := c.state
	c.mu.Unlock()
	if st != stateNew {
		return DisconnectBadRequest
	}
	if h.isClosing() {
		return DisconnectShutdown
	}
	var creds *Credentials
	subs := map[string]SubscribeOptions{}
	byClient := false // the client's own channel wishes are honoured
	if req.Token != "" {
		tok, err := h.verifyConnectToken(req.Token)
		if err != nil {
			return err
		}
		creds = &Credentials{UserID: tok.UserID, ExpireAt: tok.ExpireAt, Info: tok.Info}
		for _, ch := range tok.Channels {
			o, _, err := h.rules.resolve(ch)
			if err != nil {
				return err
			}
			subs[ch] = defaultSubscribeOptions(o)
		}
		for ch, ts := range tok.Subs {
			o, _, err := h.rules.resolve(ch)
			if err != nil {
				return err
			}
			opts := tokenSubscribeOptions(o, ts.Override)
			opts.ChanInfo, opts.Data = ts.Info, ts.Data
			subs[ch] = opts
		}
		byClient = true
	}
	var data []byte
	if cb := h.cfg.Callbacks.OnConnecting; cb != nil {
		e := ConnectEvent{
			ClientID: c.id, Token: req.Token, Credentials: creds, Data: req.Data,
			Name: req.Name, Version: req.Version, Headers: req.Headers,
		}
		for ch := range req.Subs {
			e.Channels = append(e.Channels, ch)
		}
		r, err := cb(ctx, e)
		if err != nil {
			return err
		}
		if r.Credentials != nil {
			creds = r.Credentials
		}
		for ch, o := range r.Subscriptions {
			if ch != "" {
				subs[ch] = o
			}
		}
		data = r.Data
	}
	if creds == nil && (h.cfg.AllowAnonymous || h.cfg.Insecure) {
		creds = &Credentials{}
		byClient = true
	}
	if creds == nil {
		return DisconnectBadRequest
	}
	if byClient {
		// As Centrifugo: the server-side subscriptions the client asks to
		// restore are granted when it could subscribe to them itself.
		for ch := range req.Subs {
			if _, ok := subs[ch]; ok {
				continue
			}
			o, rest, err := h.rules.resolve(ch)
			if err != nil {
				return DisconnectBadRequest
			}
			if !h.rules.validName(ch, rest, o) || h.rules.isPrivate(ch) || o.SubscribeTokenRequired {
				continue
			}
			limited := h.rules.isUserLimited(ch, o)
			if (limited && h.rules.userAllowed(ch, creds.UserID)) ||
				(!limited && o.AllowSubscribeForClient && (creds.UserID != "" || o.AllowSubscribeForAnonymous)) || h.cfg.Insecure {
				subs[ch] = defaultSubscribeOptions(o)
			}
		}
	}
	if len(subs) > h.cfg.ClientChannelLimit {
		return DisconnectChannelLimit
	}
	res := &ConnectResult{ClientID: c.id, Data: data}
	now := time.Now().Unix()
	if creds.ExpireAt > 0 {
		exp := min(creds.ExpireAt, now+maxTTL)
		if exp <= now {
			return ErrorExpired
		}
		res.Expires, res.TTL = true, uint32(exp-now)
		creds.ExpireAt = exp
	}
	if h.cfg.PingInterval > 0 {
		res.Ping = uint32(h.cfg.PingInterval / time.Second)
		res.Pong = h.cfg.PongTimeout > 0
	}
	c.mu.Lock()
	c.user, c.info, c.expireAt = creds.UserID, creds.Info, creds.ExpireAt
	c.mu.Unlock()
	if err := h.register(c); err != nil {
		return err
	}
	// Server-side subscriptions: reserved and read now, live after the
	// connect reply.
	var pending []*subscription
	fail := func(err error) error {
		for _, s := range pending {
			h.endSubscription(s)
		}
		c.mu.Lock()
		c.state = stateNew // not connected: the stale check closes it
		c.mu.Unlock()
		h.unregister(c, true)
		h.clientShard(c.id).add(c)
		return err
	}
	for ch, opts := range subs {
		o, rest, err := h.rules.resolve(ch)
		if err != nil {
			return fail(err)
		}
		if !h.rules.validName(ch, rest, o) {
			return fail(DisconnectBadRequest)
		}
		s, err := h.reserve(ctx, c, ch, o, opts, true)
		if err != nil {
			return fail(err)
		}
		pending = append(pending, s)
		sr := req.Subs[ch]
		r, err := h.prepare(ctx, s, o, opts, SubscribeRequest{Recover: sr.Recover, Epoch: sr.Epoch, Offset: sr.Offset})
		if err != nil {
			return fail(err)
		}
		if res.Subs == nil {
			res.Subs = make(map[string]*SubscribeResult, len(subs))
		}
		res.Subs[ch] = r
	}
	if err := reply(res); err != nil {
		return fail(err)
	}
	for _, s := range pending {
		h.commit(ctx, s)
	}
	return nil
}

// add puts c back in the shard (after a failed connect).
func (s *clientShard) add(c *Client) {
	s.mu.Lock()
	s.clients[c.id] = c
	s.mu.Unlock()
}

func (h *Hub) verifyConnectToken(token string) (ConnectToken, error) {
	if h.cfg.Tokens == nil {
		return ConnectToken{}, DisconnectInvalidToken
	}
	tok, err := h.cfg.Tokens.VerifyConnectToken(token)
	switch {
	case err == nil:
		return tok, nil
	case errors.Is(err, ErrTokenExpired):
		return tok, ErrorTokenExpired
	case errors.Is(err, ErrInvalidToken):
		return tok, DisconnectInvalidToken
	}
	h.log.Error("hub: verifying a connection token", "err", err)
	return tok, ErrorInternal
}

// RefreshResult is the outcome of a connection refresh.
type RefreshResult struct {
	Expires bool
	TTL     uint32
}

// Refresh renews c's credentials with a new token, as a client's refresh
// request does (Centrifugo's client-side refresh).
func (h *Hub) Refresh(ctx context.Context, c *Client, token string) (RefreshResult, error) {
	if h.cfg.Tokens == nil && h.cfg.Callbacks.OnRefresh == nil {
		return RefreshResult{}, ErrorNotAvailable
	}
	if token == "" {
		return RefreshResult{}, DisconnectBadRequest
	}
	var creds Credentials
	if h.cfg.Tokens != nil {
		tok, err := h.cfg.Tokens.VerifyConnectToken(token)
		switch {
		case errors.Is(err, ErrTokenExpired):
			return RefreshResult{}, DisconnectExpired
		case errors.Is(err, ErrInvalidToken):
			return RefreshResult{}, DisconnectInvalidToken
		case err != nil:
			return RefreshResult{}, ErrorInternal
		}
		if tok.UserID != c.UserID() {
			return RefreshResult{}, DisconnectInvalidToken
		}
		creds = Credentials{UserID: tok.UserID, ExpireAt: tok.ExpireAt, Info: tok.Info}
	}
	if cb := h.cfg.Callbacks.OnRefresh; cb != nil {
		r, err := cb(ctx, c, RefreshEvent{Token: token, Credentials: creds})
		if err != nil {
			return RefreshResult{}, err
		}
		if r.Expired {
			return RefreshResult{}, DisconnectExpired
		}
		if r.ExpireAt != 0 {
			creds.ExpireAt = r.ExpireAt
		}
		if r.Info != nil {
			creds.Info = r.Info
		}
	}
	now := time.Now().Unix()
	var res RefreshResult
	if creds.ExpireAt > 0 {
		exp := min(creds.ExpireAt, now+maxTTL)
		if exp <= now {
			return RefreshResult{}, ErrorExpired
		}
		res.Expires, res.TTL = true, uint32(exp-now)
		creds.ExpireAt = exp
	}
	c.mu.Lock()
	c.expireAt = creds.ExpireAt
	if len(creds.Info) > 0 {
		c.info = creds.Info
	}
	c.mu.Unlock()
	return res, nil
}

// SubRefresh renews a subscription's expiry with a new subscription token,
// as a client's sub_refresh request does.
func (h *Hub) SubRefresh(ctx context.Context, c *Client, ch, token string) (RefreshResult, error) {
	if ch == "" {
		return RefreshResult{}, DisconnectBadRequest
	}
	c.mu.Lock()
	s := c.subLocked(ch)
	user := c.user
	c.mu.Unlock()
	if s == nil {
		return RefreshResult{}, ErrorPermissionDenied
	}
	if token == "" {
		return RefreshResult{}, ErrorBadRequest
	}
	if h.cfg.Tokens == nil {
		return RefreshResult{}, ErrorNotAvailable
	}
	tok, err := h.cfg.Tokens.VerifySubscribeToken(token)
	switch {
	case errors.Is(err, ErrTokenExpired):
		return RefreshResult{}, DisconnectSubExpired
	case errors.Is(err, ErrInvalidToken):
		return RefreshResult{}, DisconnectInvalidToken
	case err != nil:
		return RefreshResult{}, ErrorInternal
	}
	if tok.Channel != ch || tok.UserID != user || (tok.Client != "" && tok.Client != c.id) {
		return RefreshResult{}, DisconnectInvalidToken
	}
	now := time.Now().Unix()
	var res RefreshResult
	exp := tok.ExpireAt
	if exp > 0 {
		exp = min(exp, now+maxTTL)
		if exp <= now {
			return RefreshResult{}, DisconnectSubExpired
		}
		res.Expires, res.TTL = true, uint32(exp-now)
	}
	s.expireAt.Store(exp)
	return res, nil
}
