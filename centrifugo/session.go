package centrifugo

import (
	"context"
	"errors"
	"io"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker"
	"github.com/wsgate/wsgate/hub"
)

// replies collects the replies to one frame's commands, written as one
// frame (JSON lines, or length-prefixed Protobuf messages).
type replies struct {
	s   *session
	enc protocol.DataEncoder
	n   int
}

func (r *replies) add(rep *protocol.Reply) error {
	b, err := protocol.GetReplyEncoder(r.s.proto).Encode(rep)
	if err != nil {
		return err
	}
	if r.enc == nil {
		r.enc = protocol.GetDataEncoder(r.s.proto)
	}
	r.n++
	return r.enc.Encode(b)
}

// flush writes the collected replies.
func (r *replies) flush() {
	if r.n == 0 {
		return
	}
	if r.s.conn == nil {
		r.enc.Reset()
		r.n = 0
		return
	}
	typ := wsgate.TextMessage
	if r.s.proto == protocol.TypeProtobuf {
		typ = wsgate.BinaryMessage
	}
	if err := r.s.conn.Write(context.Background(), typ, r.enc.FinishNoCopy()); err != nil && errors.Is(err, wsgate.ErrQueueFull) {
		r.s.c.Disconnect(hub.DisconnectSlow)
	}
	r.enc.Reset()
	r.n = 0
}

func (r *replies) release() {
	if r.enc != nil {
		protocol.PutDataEncoder(r.s.proto, r.enc)
		r.enc = nil
	}
}

// handleFrame decodes and serves the commands of one frame. It reports
// false when the connection is being closed.
func (s *session) handleFrame(frame []byte) bool {
	dec := protocol.GetCommandDecoder(s.proto, frame)
	defer protocol.PutCommandDecoder(s.proto, dec)
	out := &replies{s: s}
	defer out.release()
	defer out.flush()
	n := 0
	for {
		cmd, err := dec.Decode()
		if cmd != nil {
			n++
			if !s.handleCommand(cmd, out) {
				return false
			}
		}
		if err != nil {
			if err == io.EOF && n > 0 {
				return true
			}
			// Malformed, truncated or empty: Centrifugo's bad request.
			out.flush()
			s.c.Disconnect(hub.DisconnectBadRequest)
			return false
		}
	}
}

// handleCommand serves one command; false means the connection closes.
func (s *session) handleCommand(cmd *protocol.Command, out *replies) bool {
	s.mu.Lock()
	connected, unusable := s.connected, s.unusable
	s.mu.Unlock()
	c := s.c
	if unusable {
		out.flush()
		c.Disconnect(hub.DisconnectBadRequest)
		return false
	}
	if cmd.Id == 0 && cmd.Send == nil {
		// A pong.
		if !connected || !c.Pong() {
			out.flush()
			c.Disconnect(hub.DisconnectBadRequest)
			return false
		}
		return true
	}
	if !connected && cmd.Connect == nil {
		out.flush()
		c.Disconnect(hub.DisconnectBadRequest)
		return false
	}
	ctx, cancel := s.commandContext()
	defer cancel()
	h := s.h.cfg.Hub
	rep := &protocol.Reply{Id: cmd.Id}
	var err error
	switch {
	case cmd.Connect != nil:
		err = s.connect(ctx, cmd.Connect, rep, out)
		if err != nil {
			if e, _ := hub.AsError(err); e != nil {
				// An error reply to connect leaves the connection unusable.
				s.mu.Lock()
				s.unusable = true
				s.mu.Unlock()
			}
		} else {
			return true // written by connect
		}
	case cmd.Subscribe != nil:
		err = s.subscribe(ctx, cmd.Subscribe, rep, out)
		if err == nil {
			return true // written by subscribe
		}
	case cmd.Unsubscribe != nil:
		if err = h.Unsubscribe(ctx, c, cmd.Unsubscribe.Channel); err == nil {
			rep.Unsubscribe = &protocol.UnsubscribeResult{}
		}
	case cmd.Publish != nil:
		if err = h.ClientPublish(ctx, c, cmd.Publish.Channel, cmd.Publish.Data); err == nil {
			rep.Publish = &protocol.PublishResult{}
		}
	case cmd.Presence != nil:
		var p map[string]*broker.ClientInfo
		if p, err = h.ClientPresence(ctx, c, cmd.Presence.Channel); err == nil {
			res := &protocol.PresenceResult{Presence: make(map[string]*protocol.ClientInfo, len(p))}
			for id, info := range p {
				res.Presence[id] = infoToProto(info)
			}
			rep.Presence = res
		}
	case cmd.PresenceStats != nil:
		var st broker.PresenceStats
		if st, err = h.ClientPresenceStats(ctx, c, cmd.PresenceStats.Channel); err == nil {
			rep.PresenceStats = &protocol.PresenceStatsResult{NumClients: uint32(st.NumClients), NumUsers: uint32(st.NumUsers)}
		}
	case cmd.History != nil:
		req := hub.HistoryRequest{Limit: int(cmd.History.Limit), Reverse: cmd.History.Reverse}
		if sp := cmd.History.Since; sp != nil {
			req.Since = &broker.StreamPosition{Offset: sp.Offset, Epoch: sp.Epoch}
		}
		var hr hub.HistoryResult
		if hr, err = h.ClientHistory(ctx, c, cmd.History.Channel, req); err == nil {
			rep.History = &protocol.HistoryResult{Publications: pubsToProto(hr.Publications), Epoch: hr.Epoch, Offset: hr.Offset}
		}
	case cmd.Rpc != nil:
		var data []byte
		if data, err = h.RPC(ctx, c, cmd.Rpc.Method, cmd.Rpc.Data); err == nil {
			rep.Rpc = &protocol.RPCResult{Data: data}
		}
	case cmd.Send != nil:
		if err = h.Message(ctx, c, cmd.Send.Data); err == nil {
			return true // no reply
		}
	case cmd.Refresh != nil:
		var rr hub.RefreshResult
		if rr, err = h.Refresh(ctx, c, cmd.Refresh.Token); err == nil {
			rep.Refresh = &protocol.RefreshResult{Expires: rr.Expires, Ttl: rr.TTL}
		}
	case cmd.SubRefresh != nil:
		var rr hub.RefreshResult
		if rr, err = h.SubRefresh(ctx, c, cmd.SubRefresh.Channel, cmd.SubRefresh.Token); err == nil {
			rep.SubRefresh = &protocol.SubRefreshResult{Expires: rr.Expires, Ttl: rr.TTL}
		}
	default:
		// No request (or one this server does not know, such as ping):
		// Centrifugo's bad request.
		err = hub.DisconnectBadRequest
	}
	if err != nil {
		e, d := hub.AsError(err)
		if d != nil {
			out.flush()
			c.Disconnect(*d)
			return false
		}
		rep.Error = &protocol.Error{Code: e.Code, Message: e.Message, Temporary: e.Temporary}
	}
	if err := out.add(rep); err != nil {
		out.flush()
		c.Disconnect(hub.DisconnectInappropriateProtocol)
		return false
	}
	return true
}

// connect serves a connect command; on success the reply is written (and
// flushed) before the server-side subscriptions go live.
func (s *session) connect(ctx context.Context, req *protocol.ConnectRequest, rep *protocol.Reply, out *replies) error {
	hr := hub.ConnectRequest{Token: req.Token, Data: req.Data, Name: req.Name, Version: req.Version, Headers: req.Headers}
	if len(req.Subs) > 0 {
		hr.Subs = make(map[string]hub.SubscribeRequest, len(req.Subs))
		for ch, sr := range req.Subs {
			if sr != nil {
				hr.Subs[ch] = hub.SubscribeRequest{Recover: sr.Recover, Epoch: sr.Epoch, Offset: sr.Offset}
			}
		}
	}
	return s.h.cfg.Hub.Connect(ctx, s.c, hr, func(res *hub.ConnectResult) error {
		cr := &protocol.ConnectResult{
			Client:  res.ClientID,
			Version: s.h.cfg.Version,
			Expires: res.Expires,
			Ttl:     res.TTL,
			Data:    res.Data,
			Ping:    res.Ping,
			Pong:    res.Pong,
		}
		if len(res.Subs) > 0 {
			cr.Subs = make(map[string]*protocol.SubscribeResult, len(res.Subs))
			for ch, r := range res.Subs {
				cr.Subs[ch] = subscribeResultToProto(r)
			}
		}
		rep.Connect = cr
		if err := out.add(rep); err != nil {
			return hub.DisconnectInappropriateProtocol
		}
		s.mu.Lock()
		s.connected = true
		s.mu.Unlock()
		out.flush()
		return nil
	})
}

// subscribeFlagRejectUnrecovered is SubscribeRequest.flag's bit asking for
// error 112 instead of an unrecovered subscription.
const subscribeFlagRejectUnrecovered = 1 << 1

// subscribe serves a subscribe command; on success the reply is written
// (and flushed) before the subscription goes live.
func (s *session) subscribe(ctx context.Context, req *protocol.SubscribeRequest, rep *protocol.Reply, out *replies) error {
	if req.Type != 0 || req.Delta != "" || req.Tf != nil {
		// Map subscriptions, delta compression and tags filters are not
		// supported; a delta request is served without delta, as Centrifugo
		// does when the namespace allows none.
		if req.Type != 0 || req.Tf != nil {
			return hub.ErrorNotAvailable
		}
	}
	hr := hub.SubscribeRequest{
		Channel:           req.Channel,
		Token:             req.Token,
		Data:              req.Data,
		Recover:           req.Recover,
		Epoch:             req.Epoch,
		Offset:            req.Offset,
		Positioned:        req.Positioned,
		Recoverable:       req.Recoverable,
		JoinLeave:         req.JoinLeave,
		RejectUnrecovered: req.Flag&subscribeFlagRejectUnrecovered != 0,
	}
	return s.h.cfg.Hub.Subscribe(ctx, s.c, hr, func(res *hub.SubscribeResult) error {
		rep.Subscribe = subscribeResultToProto(res)
		if err := out.add(rep); err != nil {
			return hub.DisconnectInappropriateProtocol
		}
		out.flush()
		return nil
	})
}
