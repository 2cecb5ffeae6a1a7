package wsgate

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// MessageType is the type of a WebSocket data message.
type MessageType int

// The data message types of RFC 6455. Text messages must be valid UTF-8.
const (
	TextMessage   MessageType = 1
	BinaryMessage MessageType = 2
)

// String returns "text" or "binary".
func (t MessageType) String() string {
	switch t {
	case TextMessage:
		return "text"
	case BinaryMessage:
		return "binary"
	}
	return "MessageType(" + strconv.Itoa(int(t)) + ")"
}

// QueuePolicy says what a write does when the connection's send queue is
// full, that is when the peer reads more slowly than the application writes.
type QueuePolicy int

const (
	// PolicyClose closes the connection with 1008 (policy violation) and
	// fails the write with an error wrapping ErrSlowConsumer. This is the
	// default: a slow consumer never stalls the writer (which may be an event
	// callback serving many connections), nothing is lost silently, and the
	// client learns why it was cut off and can reconnect.
	PolicyClose QueuePolicy = iota
	// PolicyBlock makes the write wait for room, until the write's context is
	// done or WriteTimeout passes, whichever comes first. Never use it from an
	// OnMessage callback: the callback would hold up every connection of its
	// event loop.
	PolicyBlock
	// PolicyDropNewest rejects the new message: the write fails with
	// ErrQueueFull and the message is counted in Stats.Dropped.
	PolicyDropNewest
	// PolicyDropOldest accepts the new message and discards the oldest queued
	// data message that has not started to go out; it is counted in
	// Stats.Dropped. Suits feeds where only the latest value matters.
	PolicyDropOldest
)

// String names the policy.
func (p QueuePolicy) String() string {
	switch p {
	case PolicyClose:
		return "close"
	case PolicyBlock:
		return "block"
	case PolicyDropNewest:
		return "drop-newest"
	case PolicyDropOldest:
		return "drop-oldest"
	}
	return "QueuePolicy(" + strconv.Itoa(int(p)) + ")"
}

// Options configures a connection made by Upgrade, Dial or Wrap. A nil
// *Options and the zero value of every field mean the documented default.
// The library never modifies the caller's Options, and one Options value may
// be shared by any number of connections.
type Options struct {
	// OriginPatterns lists extra host patterns (path.Match syntax, matched
	// against the Origin header's host[:port], case-insensitive) that Upgrade
	// accepts besides the request's own Host. A pattern without a port
	// matches any port; a pattern with a scheme ("https://*.example.com")
	// matches the whole origin, so the scheme must match too. Server side
	// only.
	//
	// By default only same-origin requests (and requests without an Origin
	// header, which browsers always send) are accepted, so a page on another
	// site cannot open a socket with a visitor's cookies. A rejected request
	// gets 403 Forbidden and Upgrade returns an error wrapping
	// ErrOriginNotAllowed.
	OriginPatterns []string

	// InsecureSkipOriginCheck accepts every Origin. Only for endpoints that
	// authenticate without cookies or other ambient credentials.
	InsecureSkipOriginCheck bool

	// Subprotocols lists the application subprotocols in order of preference.
	// Upgrade picks the first one the client offers; Dial offers them all.
	// Conn.Subprotocol reports the outcome ("" when none was agreed).
	Subprotocols []string

	// Compression enables permessage-deflate (RFC 7692) when the peer offers
	// or accepts it. Off by default: compression costs CPU and per-connection
	// memory, and it is only worth it for large, compressible messages.
	Compression bool

	// ClientContextTakeover lets clients keep their compression context
	// from one message to the next (server side only). Their messages then
	// compress better — small JSON messages by about a third
	// (BenchmarkCompressionContext: 79 instead of 126 bytes for 160) — but
	// the server holds a 32 KiB window for each such connection as long as
	// it lives. Off by default: the server asks every client for
	// client_no_context_takeover, so an idle compressed connection holds no
	// compression state. The server's own messages never keep context.
	ClientContextTakeover bool

	// ReadLimit is the largest message, in bytes, the connection accepts
	// (after decompression). A larger message closes the connection with
	// 1009 (message too big) and the error wraps ErrMessageTooBig.
	// Defaults to 1 MiB; -1 removes the limit.
	ReadLimit int64

	// PingInterval is how often a protocol ping is sent to measure the round
	// trip and detect dead peers. Defaults to 20s; -1 disables keepalive.
	PingInterval time.Duration

	// PingTimeout is how long after a ping some frame (any frame) must arrive
	// from the peer before the peer is declared dead and the connection is
	// closed with an error wrapping ErrPingTimeout. A half-open connection is
	// therefore closed within PingInterval + PingTimeout. Defaults to 10s.
	PingTimeout time.Duration

	// WriteTimeout bounds how long queued data may wait without any progress
	// reaching the socket. When the peer stops reading for that long the
	// connection is closed and the error wraps ErrWriteTimeout. It also bounds
	// a PolicyBlock write. Defaults to 10s.
	WriteTimeout time.Duration

	// CloseTimeout bounds the closing handshake: flushing what was queued
	// before Close, sending the close frame and waiting for the peer's.
	// Defaults to 5s.
	CloseTimeout time.Duration

	// SendQueueMessages and SendQueueBytes bound the messages waiting to be
	// written. Defaults: 1024 messages and 4 MiB. A single message larger
	// than SendQueueBytes is still accepted when the queue is empty.
	SendQueueMessages int
	SendQueueBytes    int

	// SendQueuePolicy says what a write does when the send queue is full.
	// Defaults to PolicyClose; see QueuePolicy.
	SendQueuePolicy QueuePolicy

	// JoinSeparator, when non-nil, lets a server connection that is behind
	// send several queued messages as one: a data message queued right
	// behind another of the same type that has not started to go out is
	// appended to it, after JoinSeparator. It is for protocols that frame
	// their own messages inside a WebSocket message, where fewer, larger
	// frames cost a slow reader less (Centrifugo's JSON protocol separates
	// messages with a newline; its Protobuf protocol length-prefixes them,
	// so an empty, non-nil separator). A joined frame carries at most 64
	// messages and 32 KiB. nil, the default, keeps every message in a frame
	// of its own; compressed connections never join.
	JoinSeparator []byte

	// SlowConsumerStatus and SlowConsumerReason are the close code and
	// reason PolicyClose sends to a peer that reads too slowly. Defaults:
	// 1008 (policy violation) and "slow consumer". Protocols with codes of
	// their own set them (Centrifugo's clients expect 3008 "slow").
	SlowConsumerStatus StatusCode
	SlowConsumerReason string

	// RecvQueueMessages and RecvQueueBytes bound the received messages
	// waiting for Read or ReadMessage. When the queue is full the connection
	// stops reading from the socket (TCP flow control pushes back on the
	// peer) until the application catches up; nothing is dropped. Defaults:
	// 1024 messages and 4 MiB. Not used when OnMessage is set.
	RecvQueueMessages int
	RecvQueueBytes    int

	// MessageTimeout bounds how long one incoming message may take from the
	// header of its first frame to the end of its last: a peer that starts
	// a message and then trickles it (holding its reassembly buffer) is
	// closed with 1008 and the error wraps ErrMessageTimeout. Defaults to
	// 30s; -1 disables it.
	MessageTimeout time.Duration

	// Budget, when set, is a memory budget shared with other connections:
	// the bytes this connection holds in buffers count against it, and the
	// connections holding the most are closed when the total goes over its
	// limit. See Budget.
	Budget *Budget

	// OnOpen, when set, is called once with the new connection before any
	// other callback and before any message is read, on the goroutine that
	// will call OnMessage. It may run before Upgrade or Dial has returned
	// the Conn: callbacks never see a Conn that the application has not
	// seen first through OnOpen. Use it to set up per-connection state
	// (SetValue). A panic closes the connection with 1011.
	OnOpen func(c *Conn)

	// OnMessage, when set, switches the connection to event-driven mode:
	// OnMessage is called for each message, in order, on the connection's
	// event-loop goroutine, and Read/ReadMessage return ErrEventMode. data is
	// only valid until OnMessage returns: copy it to keep it. OnMessage must
	// not block (one event loop serves many connections); writing with a
	// non-blocking SendQueuePolicy, closing, and handing work to other
	// goroutines are all fine. Idle event-driven connections cost no
	// goroutine.
	OnMessage func(c *Conn, typ MessageType, data []byte)

	// OnClose, when set, is called once when the connection has ended, with
	// the same error Err returns, after every other callback. It runs on an
	// internal goroutine (an event loop serving other connections); it must
	// not block for long. A panic in it is recovered.
	OnClose func(c *Conn, err error)

	// Header adds request headers to Dial's handshake (client side only),
	// for example Origin, Cookie or Authorization. Headers that the
	// handshake itself sets (Host, Upgrade, Connection, Sec-WebSocket-*,
	// Content-Length, Transfer-Encoding) are refused: Dial fails. To reach
	// a server under another name, dial the name and connect elsewhere with
	// NetDialContext; for subprotocols and compression use Subprotocols and
	// Compression.
	Header http.Header

	// TrustForwardedProto makes Upgrade take the request's scheme from the
	// X-Forwarded-Proto header, for servers behind a TLS-terminating proxy
	// that sets it. The scheme matters to the origin check: a page served
	// over plain http may not open a socket to an endpoint reached over
	// https. Only set it when every request comes through such a proxy.
	TrustForwardedProto bool

	// NetDialContext dials the TCP connection for Dial. Defaults to a
	// net.Dialer. Load tools use it to bind other source addresses.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// TLSConfig configures TLS for wss:// URLs in Dial (client side only).
	// Defaults to a config with ServerName set from the URL; a given config
	// without ServerName gets it the same way, on a clone.
	TLSConfig *tls.Config

	// HandshakeTimeout bounds Dial's opening handshake when ctx has no
	// earlier deadline. Defaults to 10s.
	HandshakeTimeout time.Duration
}

// Defaults, documented on the Options fields.
const (
	DefaultReadLimit        = 1 << 20
	DefaultPingInterval     = 20 * time.Second
	DefaultPingTimeout      = 10 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
	DefaultCloseTimeout     = 5 * time.Second
	DefaultQueueMessages    = 1024
	DefaultQueueBytes       = 4 << 20
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMessageTimeout   = 30 * time.Second
)

// config is an Options with every default filled in; the handshake uses
// it. A connection keeps only the connConfig part.
type config struct {
	Options
	readLimit int64 // -1 for none
	keepalive bool
	err       error       // an invalid option; Upgrade and Dial refuse to run with it
	cc        *connConfig // what connections keep, shared by all of them
}

// connConfig is what a connection needs after the handshake: kept small,
// since every connection holds one.
type connConfig struct {
	readLimit         int64
	PingInterval      time.Duration
	PingTimeout       time.Duration
	WriteTimeout      time.Duration
	CloseTimeout      time.Duration
	MessageTimeout    time.Duration
	SendQueueMessages int
	SendQueueBytes    int
	RecvQueueMessages int
	RecvQueueBytes    int
	SendQueuePolicy   QueuePolicy
	slowStatus        StatusCode
	slowReason        string
	joinSep           []byte
	subprotocols      []string
	keepalive         bool
	OnOpen            func(c *Conn)
	OnMessage         func(c *Conn, typ MessageType, data []byte)
	OnClose           func(c *Conn, err error)
}

func (c *config) conn() *connConfig {
	return &connConfig{
		readLimit:         c.readLimit,
		PingInterval:      c.PingInterval,
		PingTimeout:       c.PingTimeout,
		WriteTimeout:      c.WriteTimeout,
		CloseTimeout:      c.CloseTimeout,
		MessageTimeout:    c.MessageTimeout,
		SendQueueMessages: c.SendQueueMessages,
		SendQueueBytes:    c.SendQueueBytes,
		RecvQueueMessages: c.RecvQueueMessages,
		RecvQueueBytes:    c.RecvQueueBytes,
		SendQueuePolicy:   c.SendQueuePolicy,
		slowStatus:        c.SlowConsumerStatus,
		slowReason:        c.SlowConsumerReason,
		joinSep:           c.JoinSeparator,
		subprotocols:      c.Subprotocols,
		keepalive:         c.keepalive,
		OnOpen:            c.OnOpen,
		OnMessage:         c.OnMessage,
		OnClose:           c.OnClose,
	}
}

func newConfig(o *Options) *config {
	c := &config{}
	if o != nil {
		c.Options = *o
		// Connections refer to the list by index: it must not change.
		c.Subprotocols = slices.Clone(c.Subprotocols)
		c.JoinSeparator = slices.Clone(c.JoinSeparator)
	}
	if c.ReadLimit == 0 {
		c.ReadLimit = DefaultReadLimit
	}
	c.readLimit = c.ReadLimit
	if c.readLimit < 0 {
		c.readLimit = -1
	}
	c.keepalive = c.PingInterval >= 0
	if c.PingInterval == 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PingTimeout <= 0 {
		c.PingTimeout = DefaultPingTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.CloseTimeout <= 0 {
		c.CloseTimeout = DefaultCloseTimeout
	}
	if c.SlowConsumerStatus == 0 {
		c.SlowConsumerStatus = StatusPolicyViolation
		if c.SlowConsumerReason == "" {
			c.SlowConsumerReason = "slow consumer"
		}
	}
	if !validWireCode(c.SlowConsumerStatus) || len(c.SlowConsumerReason) > maxControlLength-2 || !utf8.ValidString(c.SlowConsumerReason) {
		c.err = fmt.Errorf("wsgate: invalid options: SlowConsumerStatus %d with reason %q cannot be sent in a close frame", int(c.SlowConsumerStatus), c.SlowConsumerReason)
	}
	switch {
	case c.MessageTimeout == 0:
		c.MessageTimeout = DefaultMessageTimeout
	case c.MessageTimeout < 0:
		c.MessageTimeout = 0 // none
	}
	if c.SendQueueMessages <= 0 {
		c.SendQueueMessages = DefaultQueueMessages
	}
	if c.SendQueueBytes <= 0 {
		c.SendQueueBytes = DefaultQueueBytes
	}
	if c.RecvQueueMessages <= 0 {
		c.RecvQueueMessages = DefaultQueueMessages
	}
	if c.RecvQueueBytes <= 0 {
		c.RecvQueueBytes = DefaultQueueBytes
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	c.cc = c.conn()
	return c
}
