// Package centrifugo serves Centrifugo's client protocol (v2, JSON and
// Protobuf) and its server HTTP API on a hub, so that Centrifugo's SDKs
// (centrifuge-js, centrifuge-go, ...) and backends written for
// Centrifugo's API work against wsgate unchanged.
//
// NewHandler returns the WebSocket endpoint (Centrifugo's
// /connection/websocket); NewAPIHandler the server API (/api/publish, ...).
// The wire format is github.com/centrifugal/protocol's; behaviour follows
// Centrifugo v6 (error and disconnect codes, recovery rules), as
// docs/protocol.md details.
package centrifugo

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/centrifugal/protocol"
	"github.com/wsgate/wsgate"
	"github.com/wsgate/wsgate/hub"
)

// Config configures the WebSocket endpoint. The zero value of every field
// means the documented default; the handler never modifies it.
type Config struct {
	// Hub serves the clients. Required.
	Hub *hub.Hub
	// MessageSizeLimit is the largest frame a client may send, in bytes;
	// a larger one closes the connection with 1009 (message too big).
	// Defaults to 65536, Centrifugo's.
	MessageSizeLimit int64
	// MaxPendingFrames bounds the frames of one connection waiting to be
	// processed; a client that sends faster than its commands are served
	// is closed with DisconnectTooManyRequests (3013). Defaults to 64.
	MaxPendingFrames int
	// CommandTimeout bounds the broker calls and callbacks of one command.
	// Defaults to 10s.
	CommandTimeout time.Duration
	// SendQueueMessages and SendQueueBytes bound a connection's send
	// queue; a client whose queue is full is disconnected as slow (3008).
	// Defaults: 1024 messages and 1 MiB (Centrifugo's client queue).
	SendQueueMessages int
	SendQueueBytes    int
	// WriteTimeout closes a connection whose queued data makes no progress
	// for this long. Defaults to 10s.
	WriteTimeout time.Duration
	// OriginPatterns and InsecureSkipOriginCheck are wsgate's origin policy
	// (same origin only by default).
	OriginPatterns          []string
	InsecureSkipOriginCheck bool
	// Compression enables permessage-deflate when the client offers it.
	Compression bool
	// Budget, when set, is a memory budget the connections share with
	// others (wsgate.Options.Budget): a server gives every endpoint the
	// same one. Nil means no shared budget.
	Budget *wsgate.Budget
	// OnOpen, when set, is called once for every connection the handler
	// upgraded, after its hub client was registered and before any of its
	// frames is read. It runs on the connection's event loop and must not
	// block. Servers use it to count and register connections.
	OnOpen func(c *wsgate.Conn)
	// OnClose, when set, is called once for every connection the handler
	// upgraded, when it has ended, with its error, after the hub was told
	// (hub.Client.Finish); it may run before Upgrade returns. Servers use it
	// to count and log connections.
	OnClose func(*wsgate.Conn, error)
	// Version is sent to clients in the connect result. Defaults to
	// "wsgate".
	Version string
	// Logger receives the handler's logs. Defaults to slog.Default().
	Logger *slog.Logger
}

// Handler is the WebSocket endpoint of the Centrifugo client protocol.
// Each connection costs no goroutine while idle: frames are read on
// wsgate's event loops, and commands run on a hub goroutine started when a
// frame arrives and ended when the connection's queue is empty.
type Handler struct {
	cfg Config
	log *slog.Logger
	// One Upgrader per encoding: every connection shares its options, and
	// finds its session in its Value.
	json, protobuf *wsgate.Upgrader
}

// Protocol defaults, documented on Config.
const (
	DefaultMessageSizeLimit  = 65536
	DefaultMaxPendingFrames  = 64
	DefaultCommandTimeout    = 10 * time.Second
	DefaultSendQueueBytes    = 1 << 20
	DefaultSendQueueMessages = 1024
)

// Subprotocols of the WebSocket transport.
const (
	SubprotocolJSON     = "centrifuge-json"
	SubprotocolProtobuf = "centrifuge-protobuf"
)

// NewHandler returns the WebSocket endpoint for cfg.Hub.
func NewHandler(cfg Config) *Handler {
	if cfg.Hub == nil {
		panic("centrifugo: Config.Hub is required")
	}
	if cfg.MessageSizeLimit <= 0 {
		cfg.MessageSizeLimit = DefaultMessageSizeLimit
	}
	if cfg.MaxPendingFrames <= 0 {
		cfg.MaxPendingFrames = DefaultMaxPendingFrames
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	if cfg.SendQueueBytes <= 0 {
		cfg.SendQueueBytes = DefaultSendQueueBytes
	}
	if cfg.SendQueueMessages <= 0 {
		cfg.SendQueueMessages = DefaultSendQueueMessages
	}
	if cfg.Version == "" {
		cfg.Version = "wsgate"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Handler{cfg: cfg, log: cfg.Logger}
	h.json = h.upgrader([]byte("\n"))
	h.protobuf = h.upgrader([]byte{})
	return h
}

// upgrader returns the Upgrader of one encoding. A subscriber that is
// behind gets its queued pushes in fewer frames: joined with newlines in
// JSON, length-prefixed in Protobuf (join is empty), as Centrifugo sends
// them.
func (h *Handler) upgrader(join []byte) *wsgate.Upgrader {
	up, err := wsgate.NewUpgrader(&wsgate.Options{
		OriginPatterns:          h.cfg.OriginPatterns,
		InsecureSkipOriginCheck: h.cfg.InsecureSkipOriginCheck,
		Subprotocols:            []string{SubprotocolJSON, SubprotocolProtobuf},
		Compression:             h.cfg.Compression,
		ReadLimit:               h.cfg.MessageSizeLimit,
		// The hub's application-level pings detect dead peers.
		PingInterval:      -1,
		WriteTimeout:      h.cfg.WriteTimeout,
		SendQueueMessages: h.cfg.SendQueueMessages,
		SendQueueBytes:    h.cfg.SendQueueBytes,
		// Over its queue a subscriber is closed the way Centrifugo does.
		SendQueuePolicy:    wsgate.PolicyClose,
		SlowConsumerStatus: wsgate.StatusCode(hub.DisconnectSlow.Code),
		SlowConsumerReason: hub.DisconnectSlow.Reason,
		JoinSeparator:      join,
		Budget:             h.cfg.Budget,
		OnOpen:             h.open,
		OnMessage:          h.onMessage,
		OnClose:            h.closed,
	})
	if err != nil {
		panic("centrifugo: " + err.Error()) // the options above are valid
	}
	return up
}

// The connection callbacks, shared by every connection: each finds its
// session in the connection's Value.

func (h *Handler) open(c *wsgate.Conn) {
	s := c.Value().(*session)
	s.open(c)
	if h.cfg.OnOpen != nil {
		h.cfg.OnOpen(c)
	}
}

func (h *Handler) onMessage(c *wsgate.Conn, typ wsgate.MessageType, data []byte) {
	c.Value().(*session).onMessage(c, typ, data)
}

func (h *Handler) closed(c *wsgate.Conn, err error) {
	c.Value().(*session).closed(c, err)
	if h.cfg.OnClose != nil {
		h.cfg.OnClose(c, err)
	}
}

// ServeHTTP upgrades the request. The Protobuf encoding is chosen with the
// centrifuge-protobuf subprotocol (or ?format=protobuf, as Centrifugo
// allows); JSON otherwise.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, err := h.Upgrade(w, r); err != nil {
		h.log.Debug("centrifugo: upgrade refused", "remote", r.RemoteAddr, "err", err)
	}
}

// Upgrade upgrades the request as ServeHTTP does and returns the
// connection, or the error that refused it (the client has had its answer
// then). Config.OnClose tells when the connection ends.
func (h *Handler) Upgrade(w http.ResponseWriter, r *http.Request) (*wsgate.Conn, error) {
	up, value := h.Prepare(r)
	return up.UpgradeWithValue(w, r, value)
}

// Prepare returns the Upgrader and the connection Value for an upgrade
// request, for a wsgate.Server's UpgradeFunc (or for
// Upgrader.UpgradeWithValue).
func (h *Handler) Prepare(r *http.Request) (*wsgate.Upgrader, any) {
	s := &session{h: h, proto: protocol.TypeJSON}
	if q := r.URL.Query(); q.Get("format") == "protobuf" || q.Get("cf_protocol") == "protobuf" {
		s.proto = protocol.TypeProtobuf
	} else if !offers(r, SubprotocolJSON) && offers(r, SubprotocolProtobuf) {
		s.proto = protocol.TypeProtobuf // what the upgrade will choose
	}
	if s.proto == protocol.TypeProtobuf {
		return h.protobuf, s
	}
	return h.json, s
}

// offers reports whether the request offers the subprotocol sub.
func offers(r *http.Request, sub string) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == sub {
				return true
			}
		}
	}
	return false
}

// open runs on the connection's reading goroutine before any message: it
// registers the hub client.
func (s *session) open(conn *wsgate.Conn) {
	if conn.Subprotocol() == SubprotocolProtobuf {
		s.proto = protocol.TypeProtobuf
	}
	codec := jsonCodec
	if s.proto == protocol.TypeProtobuf {
		codec = protobufCodec
	}
	c := s.h.cfg.Hub.NewClient(conn, codec)
	if c == nil {
		conn.CloseWithStatus(wsgate.StatusCode(hub.DisconnectShutdown.Code), hub.DisconnectShutdown.Reason)
		return
	}
	s.attach(c)
}

// session is one connection's protocol state.
type session struct {
	h     *Handler
	proto protocol.Type

	mu        sync.Mutex
	c         *hub.Client
	conn      *wsgate.Conn
	queue     [][]byte // frames waiting for the worker
	running   bool     // a worker goroutine is serving queue
	gone      bool     // the connection ended
	goneErr   error
	unusable  bool // connect failed: every next command is a bad request
	connected bool
}

// attach binds the session to its hub client.
func (s *session) attach(c *hub.Client) {
	s.mu.Lock()
	s.c, s.conn = c, c.Conn()
	s.mu.Unlock()
}

// closed is the connection's end: the hub client is told.
func (s *session) closed(conn *wsgate.Conn, err error) {
	s.mu.Lock()
	s.gone, s.goneErr = true, err
	c := s.c
	s.queue = nil
	s.mu.Unlock()
	if c != nil {
		c.Finish(err)
	}
}

// onMessage runs on an event loop: it must not block. Pongs are handled
// here; other frames are copied and queued for the worker.
func (s *session) onMessage(_ *wsgate.Conn, _ wsgate.MessageType, data []byte) {
	s.mu.Lock()
	c := s.c
	if c == nil {
		// OnOpen found the hub shutting down and closed the connection.
		s.mu.Unlock()
		return
	}
	connected := s.connected
	s.mu.Unlock()
	if connected && isPongFrame(s.proto, data) {
		if !c.Pong() {
			c.Disconnect(hub.DisconnectBadRequest)
		}
		return
	}
	s.enqueue(append([]byte(nil), data...))
}

// isPongFrame reports whether a frame is a single empty command: "{}" in
// JSON, a zero length in Protobuf.
func isPongFrame(proto protocol.Type, data []byte) bool {
	if proto == protocol.TypeJSON {
		return string(data) == "{}"
	}
	return len(data) == 1 && data[0] == 0
}

func (s *session) enqueue(frame []byte) {
	s.mu.Lock()
	if s.gone {
		s.mu.Unlock()
		return
	}
	if len(s.queue) >= s.h.cfg.MaxPendingFrames {
		s.queue = nil
		c := s.c
		s.mu.Unlock()
		c.Disconnect(hub.DisconnectTooManyRequests)
		return
	}
	s.queue = append(s.queue, frame)
	start := !s.running
	s.running = true
	s.mu.Unlock()
	if start && !s.h.cfg.Hub.Go(s.work) {
		s.c.Disconnect(hub.DisconnectShutdown)
	}
}

// work serves the queue until it is empty.
func (s *session) work() {
	defer func() {
		if r := recover(); r != nil {
			s.h.log.Error("centrifugo: panic serving a client", "panic", r)
			s.mu.Lock()
			s.running = false
			s.queue = nil
			s.mu.Unlock()
			s.c.Disconnect(hub.DisconnectServerError)
		}
	}()
	for {
		s.mu.Lock()
		if len(s.queue) == 0 || s.gone {
			s.running = false
			s.queue = nil
			s.mu.Unlock()
			return
		}
		f := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()
		if !s.handleFrame(f) {
			s.mu.Lock()
			s.running = false
			s.queue = nil
			s.mu.Unlock()
			return
		}
	}
}

func (s *session) commandContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.h.cfg.CommandTimeout)
}
