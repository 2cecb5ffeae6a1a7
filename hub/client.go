package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"sync"
	"time"

	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/broker"
)

// Client is one connection in the hub. Transports create it with
// NewClient when the WebSocket opens, pass its requests to the hub
// (Connect first, then Subscribe, Publish, ...), and call Finish when the
// connection has ended.
//
// A Client is small on purpose (an idle connection with one subscription
// costs a few hundred bytes of hub state): it keeps its subscriptions in a
// short slice and its timers as timestamps that the hub's shared tickers
// look at.
type Client struct {
	hub   *Hub
	conn  *wsgate.Conn
	codec Codec
	id    string

	mu        sync.Mutex
	state     uint8
	closing   bool // a close was started; no more writes
	user      string
	info      []byte
	subs      []*subscription
	expireAt  int64 // connection expiry, Unix seconds; 0 for none
	createdAt int64 // unix nanoseconds
	nextPing  int64 // unix nanoseconds; 0 when pings are off
	pongDue   int64 // unix nanoseconds; 0 when no pong is awaited
	pinged    bool  // a ping was sent and not answered yet
	uidx      int32 // index in the user's client list; guarded by the user shard
	reason    Disconnect
}

const (
	stateNew uint8 = iota
	stateConnected
	stateClosed
)

// NewClient registers a client for conn, whose frames codec encodes. The
// client must Connect within Config.StaleCloseDelay or it is closed with
// DisconnectStale. conn should close slow consumers with the protocol's
// code (wsgate.Options.SlowConsumerStatus, DisconnectSlow's code for
// Centrifugo's clients); the hub counts them in Stats.SlowDisconnects. With
// PolicyDropNewest instead, a full send queue makes the hub disconnect the
// client with DisconnectSlow itself. Broadcasts are enqueued
// (wsgate.Conn.Enqueue), so Options.JoinSeparator lets a subscriber that is
// behind receive them in fewer frames. NewClient returns nil after Shutdown
// has started; close conn with DisconnectShutdown then.
func (h *Hub) NewClient(conn *wsgate.Conn, codec Codec) *Client {
	c := &Client{hub: h, conn: conn, codec: codec, id: newID(), createdAt: time.Now().UnixNano()}
	if h.isClosing() {
		return nil
	}
	s := h.clientShard(c.id)
	s.mu.Lock()
	s.clients[c.id] = c
	s.mu.Unlock()
	return c
}

// ID returns the client's unique ID.
func (c *Client) ID() string { return c.id }

// Conn returns the client's connection.
func (c *Client) Conn() *wsgate.Conn { return c.conn }

// Codec returns the client's codec.
func (c *Client) Codec() Codec { return c.codec }

// UserID returns the user ID of a connected client ("" for anonymous).
func (c *Client) UserID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.user
}

// Info returns the connection info (from the token or OnConnecting).
func (c *Client) Info() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// Connected reports whether Connect succeeded and the client has not gone.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateConnected
}

// Channels returns the channels the client is subscribed to.
func (c *Client) Channels() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.subs))
	for _, s := range c.subs {
		out = append(out, s.ch.name)
	}
	return out
}

// IsSubscribed reports whether the client is subscribed to ch.
func (c *Client) IsSubscribed(ch string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.subLocked(ch) != nil
}

func (c *Client) subLocked(ch string) *subscription {
	for _, s := range c.subs {
		if s.ch.name == ch {
			return s
		}
	}
	return nil
}

// clientInfo is how the client appears in ch (publisher, presence).
func (c *Client) clientInfo(chanInfo []byte) *broker.ClientInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &broker.ClientInfo{ClientID: c.id, UserID: c.user, ConnInfo: c.info, ChanInfo: chanInfo}
}

// Disconnect closes the connection with d's code and reason, after what
// was queued before. It returns at once; the transport then calls Finish.
func (c *Client) Disconnect(d Disconnect) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.reason = d
	c.mu.Unlock()
	if c.conn != nil {
		if err := c.conn.CloseWithStatus(wsgate.StatusCode(d.Code), d.Reason); err != nil {
			c.conn.CloseNow()
		}
	}
}

// Pong records the client's answer to a ping. It reports false when no
// ping was awaiting an answer: Centrifugo closes such connections with
// DisconnectBadRequest.
func (c *Client) Pong() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pinged {
		return false
	}
	c.pinged = false
	c.pongDue = 0
	return true
}

// Send pushes an asynchronous message to the client.
func (c *Client) Send(data []byte) error {
	b, err := c.codec.EncodeMessage(data)
	if err != nil {
		return err
	}
	return c.write(b)
}

// Finish ends the client once its connection has closed: its
// subscriptions end (presence entries removed, leaves published), it
// leaves the hub, and OnDisconnect runs. Transports call it once, from
// wsgate.Options.OnClose; the work runs on a hub goroutine. err is the
// connection's end (its close code becomes the Disconnect reported to
// OnDisconnect when the hub did not choose one).
func (c *Client) Finish(err error) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	wasConnected := c.state == stateConnected
	c.state = stateClosed
	c.closing = true
	if c.reason == (Disconnect{}) {
		c.reason = DisconnectConnectionClosed
		var ce *wsgate.CloseError
		if errors.As(err, &ce) && ce.Remote && ce.Code >= 3000 && ce.Code <= 4999 {
			c.reason = Disconnect{Code: uint32(ce.Code), Reason: ce.Reason}
		}
	}
	subs := c.subs
	c.subs = nil
	c.mu.Unlock()
	h := c.hub
	work := func() {
		for _, s := range subs {
			h.endSubscription(s)
		}
		h.unregister(c, wasConnected)
		if wasConnected && h.cfg.Callbacks.OnDisconnect != nil {
			func() {
				defer h.recoverPanic("OnDisconnect")
				h.cfg.Callbacks.OnDisconnect(c, c.reason)
			}()
		}
	}
	if !h.Go(work) {
		// Shutting down: the hub waits for the clients to go, so do it here.
		work()
	}
}

// unregister removes c from the hub's maps.
func (h *Hub) unregister(c *Client, connected bool) {
	s := h.clientShard(c.id)
	s.mu.Lock()
	delete(s.clients, c.id)
	s.mu.Unlock()
	if !connected {
		return
	}
	h.stats.clients.Add(-1)
	us := h.userShard(c.user)
	us.mu.Lock()
	list := us.users[c.user]
	// Swap with the last: O(1), which matters for the anonymous user's
	// list of every anonymous connection.
	if i := int(c.uidx); i < len(list) && list[i] == c {
		last := list[len(list)-1]
		list[i], last.uidx = last, int32(i)
		list[len(list)-1] = nil
		list = list[:len(list)-1]
	}
	if len(list) == 0 {
		delete(us.users, c.user)
		h.stats.users.Add(-1)
	} else {
		us.users[c.user] = list
	}
	us.mu.Unlock()
}

// register makes c a connected client of user.
func (h *Hub) register(c *Client) error {
	c.mu.Lock()
	if c.state != stateNew || c.closing {
		c.mu.Unlock()
		return DisconnectConnectionClosed
	}
	user := c.user
	c.mu.Unlock()
	us := h.userShard(user)
	us.mu.Lock()
	list := us.users[user]
	if lim := h.cfg.UserConnectionLimit; lim > 0 && user != "" && len(list) >= lim {
		us.mu.Unlock()
		return DisconnectConnectionLimit
	}
	c.mu.Lock()
	if c.state != stateNew {
		c.mu.Unlock()
		us.mu.Unlock()
		return DisconnectConnectionClosed
	}
	c.state = stateConnected
	now := time.Now().UnixNano()
	if iv := h.cfg.PingInterval; iv > 0 {
		// The first ping comes between half an interval and an interval,
		// so that clients that connected together do not ping together.
		c.nextPing = now + int64(iv/2) + mrand.Int64N(int64(iv/2)+1)
	}
	c.mu.Unlock()
	if len(list) == 0 {
		h.stats.users.Add(1)
	}
	c.uidx = int32(len(list))
	us.users[user] = append(list, c)
	us.mu.Unlock()
	h.stats.clients.Add(1)
	return nil
}

// write sends a frame encoded for this client.
func (c *Client) write(b []byte) error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Write(context.Background(), c.codec.MessageType(), b)
	if err != nil {
		c.writeFailed(err)
	}
	return err
}

// writePrepared sends a frame shared with other clients.
func (c *Client) writePrepared(pm *wsgate.PreparedMessage) bool {
	if c.conn == nil {
		return true
	}
	err := c.conn.WritePrepared(context.Background(), pm)
	if err != nil {
		c.writeFailed(err)
		return false
	}
	return true
}

// enqueuePrepared queues pm for the client without writing it now (a
// broadcast): the connection writes a burst of them in one system call.
func (c *Client) enqueuePrepared(pm *wsgate.PreparedMessage) bool {
	if c.conn == nil {
		return true
	}
	if err := c.conn.Enqueue(context.Background(), pm); err != nil {
		c.writeFailed(err)
		return false
	}
	return true
}

// writeFailed handles a failed write: a full queue means a slow consumer.
func (c *Client) writeFailed(err error) {
	if errors.Is(err, wsgate.ErrQueueFull) || errors.Is(err, wsgate.ErrSlowConsumer) {
		c.mu.Lock()
		first := !c.closing
		c.mu.Unlock()
		if first {
			c.hub.stats.slow.Add(1)
			c.Disconnect(DisconnectSlow)
		}
	}
}

// newID returns a random UUID (version 4), Centrifugo's client ID format.
func newID() string {
	var b [16]byte
	if _, err := cryptoRead(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

var cryptoRead = rand.Read
