package wsgate

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Conn is a WebSocket connection, client or server side.
//
// Concurrency: every method may be called from any number of goroutines at
// once. Writes from different goroutines never interleave within a message;
// each Read or ReadMessage call receives whole messages, each message going
// to exactly one caller, in order.
//
// Reading: a Conn reads from the network by itself. Received messages either
// go to Options.OnMessage (event-driven mode, no goroutine per connection) or
// wait in a bounded receive queue for Read and ReadMessage. When that queue
// is full, or when the peer does not read what the Conn writes, the Conn
// stops reading until the application or the peer catches up.
//
// Writing: Write and WriteMessage encode the message and hand it to the
// socket at once when nothing else is queued, without switching goroutines;
// otherwise the message joins a bounded send queue that is flushed in as few
// system calls as possible. Options.SendQueuePolicy says what happens when
// the peer reads too slowly for the queue. A write returns nil once the
// message is written or queued, and an error when it was refused or the
// connection failed before the message could be written; a queued message
// that can no longer be delivered ends the connection, and Err says why.
//
// Closing: Close and CloseWithStatus start the closing handshake and return
// at once, on every transport: what was queued before is flushed, then the
// close frame is sent, and the Conn waits (at most Options.CloseTimeout) for
// the peer's close frame before closing the TCP connection. Calling them
// again is harmless. Done is closed when the connection has ended and Err
// then says why. After Close, writes fail with an error matching ErrClosed
// and net.ErrClosed; reads first return the messages received before the
// end, then fail the same way. No goroutine started for the connection
// outlives it.
//
// Callbacks (Options.OnOpen, OnMessage, OnClose) run on the goroutine that
// reads the connection, one at a time: OnOpen first, OnClose last.
type Conn struct {
	cfg    *connConfig
	server bool
	sub    int16 // the agreed subprotocol, an index in cfg.subprotocols; -1 for none
	// Addresses: the local one shared with other connections on the same
	// listener, a remote TCP one as a value (no allocation held per
	// connection); any other remote address is in ext.
	local   net.Addr
	rap     netip.AddrPort
	deflate *deflater // nil unless permessage-deflate was negotiated
	budget  *Budget   // nil when no memory budget applies

	// Exactly one transport: a file descriptor served by an event loop
	// (fd >= 0, loop != nil), or a net.Conn with a reader goroutine (nt).
	fd   int
	loop *loop
	nt   *netTransport

	rs readState // owned by whichever goroutine reads: the loop or the reader

	mu           sync.Mutex
	phase        connPhase
	closeWritten bool             // our close frame is written
	closeRecv    bool             // the peer's close frame arrived
	failed       bool             // we failed the connection: no reply close is awaited
	halfClosed   bool             // our side of TCP is shut down after a failure
	writing      bool             // a goroutine is writing out to a net.Conn
	corked       bool             // the loop is processing input: flush after it
	outStuck     bool             // output backlog is over outPauseBytes: reading waits
	flushPosted  bool             // a flush task is on its way to the loop
	q            *sendQueue       // &noQueue while nothing is queued
	lone         *PreparedMessage // queued by reference, alone (see Enqueue)
	deadline     int64            // nanotime by which the closing handshake must end
	lastPing     int64            // nanotime of the last ping sent
	pingAt       int64            // nanotime of the oldest unanswered ping, 0 if none
	cause        error            // why the connection ends; set once
	spaceCh      chan struct{}
	done         chan struct{} // made by Done on demand, closed by finish
	rq           *recvQueue    // nil in event-driven mode
	ext          *connExt      // rarely used state, made on demand
	hdr          [maxHeaderLen]byte

	readLimit atomic.Int64 // -1 for none
	msgStart  atomic.Int64 // nanotime the incoming message began, 0 between messages
	held      atomic.Int64 // bytes charged to the budget
	lastRecv  atomic.Int64 // nanotime of the last sign of life from the peer
	rtt       atomic.Int64
	msgsIn    atomic.Uint64
	msgsOut   atomic.Uint64
	bytesIn   atomic.Uint64
	bytesOut  atomic.Uint64
	dropped   atomic.Uint64
}

// connPhase is where a connection is in its life. It only moves forward.
type connPhase uint8

const (
	phaseOpen     connPhase = iota
	phaseClosing            // our close frame is queued: writes fail
	phaseDown               // the transport is being torn down
	phaseFinished           // the transport is gone; Done is closed
)

// connExt holds what few connections use, so that the rest do not pay for
// it.
type connExt struct {
	raddr  net.Addr // a remote address other than TCP
	value  any
	pings  []pingWaiter
	stream *streamSlot // the message slot, while a Writer streams
}

// streamSlot is held by the streaming writer that owns the connection's
// message slot.
type streamSlot struct {
	w    *messageWriter
	free chan struct{} // closed when the stream ends
}

func (c *Conn) extLocked() *connExt {
	if c.ext == nil {
		c.ext = &connExt{}
	}
	return c.ext
}

// sendQueue is what a connection has queued to write. A connection holds
// one only while something is queued: otherwise its q is &noQueue, which is
// never written to.
type sendQueue struct {
	out          []byte  // encoded frames not yet written; out[:outOff] is written
	outOff       int     // bytes of out already written
	inflight     int     // end of the region a writer goroutine is writing, 0 when none
	marks        []qmark // one per queued frame, in order
	qMsgs        int     // data frames in out
	qBytes       int     // their payload bytes
	lastProgress int64   // nanotime of the last write progress while out is non-empty
}

// noQueue is the empty send queue every idle connection points to.
var noQueue sendQueue

// queuePool recycles send queues.
var queuePool = sync.Pool{New: func() any { return new(sendQueue) }}

// qmark records where a queued frame lies in out.
type qmark struct {
	start  int // negative when the frame began in bytes already dropped from out
	end    int
	size   int   // payload bytes for a data frame, -1 for a control frame
	op     byte  // the frame's opcode
	frag   bool  // part of a fragmented message: never dropped alone
	joined uint8 // messages in the frame beyond the first (JoinSeparator)
}

// Stats is a snapshot of a connection's counters.
type Stats struct {
	MessagesIn  uint64        // data messages received
	BytesIn     uint64        // their payload bytes (after decompression)
	MessagesOut uint64        // data messages accepted for sending
	BytesOut    uint64        // their payload bytes (before compression)
	Dropped     uint64        // messages discarded by the send queue policy
	QueuedMsgs  int           // data frames waiting in the send queue
	QueuedBytes int           // their payload bytes
	Buffered    int64         // bytes held for this connection (charged to its Budget, if any)
	RTT         time.Duration // round trip of the last answered ping, 0 if none yet
}

var epoch = time.Now()

// nanotime is a cheap monotonic clock.
func nanotime() int64 { return int64(time.Since(epoch)) }

// newConn builds a connection on an established WebSocket stream; start
// attaches it to a transport.
func newConn(nc net.Conn, server bool, cfg *config, sub string, dp *deflateParams) *Conn {
	c := newConnState(server, cfg, sub, dp)
	c.local = nc.LocalAddr()
	if a, ok := c.local.(*net.TCPAddr); ok && server {
		c.local = internLocal(a)
	}
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		c.rap = a.AddrPort()
	} else {
		c.ext = &connExt{raddr: nc.RemoteAddr()}
	}
	return c
}

// newConnState builds a connection without its addresses and transport.
func newConnState(server bool, cfg *config, sub string, dp *deflateParams) *Conn {
	c := &Conn{
		cfg:    cfg.cc,
		server: server,
		sub:    -1,
		budget: cfg.Budget,
		fd:     -1,
		q:      &noQueue,
	}
	if sub != "" {
		c.sub = int16(slices.Index(cfg.cc.subprotocols, sub))
	}
	if dp != nil {
		c.deflate = newDeflater(*dp, server)
	}
	if cfg.OnMessage == nil {
		c.rq = &recvQueue{notify: make(chan struct{}, 1)}
	}
	c.readLimit.Store(cfg.readLimit)
	now := nanotime()
	c.lastRecv.Store(now)
	c.lastPing = now
	return c
}

// localAddrs interns the local addresses of server connections: all the
// connections of a listener share one.
var localAddrs struct {
	sync.Mutex
	m map[netip.AddrPort]*net.TCPAddr
}

func internLocal(a *net.TCPAddr) net.Addr {
	ap := a.AddrPort()
	localAddrs.Lock()
	defer localAddrs.Unlock()
	if shared := localAddrs.m[ap]; shared != nil {
		return shared
	}
	if localAddrs.m == nil {
		localAddrs.m = make(map[netip.AddrPort]*net.TCPAddr)
	}
	if len(localAddrs.m) < 1024 {
		localAddrs.m[ap] = net.TCPAddrFromAddrPort(ap)
		return localAddrs.m[ap]
	}
	return a
}

// Subprotocol returns the subprotocol agreed in the handshake, or "".
func (c *Conn) Subprotocol() string {
	if c.sub < 0 {
		return ""
	}
	return c.cfg.subprotocols[c.sub]
}

// Compressed reports whether permessage-deflate was negotiated.
func (c *Conn) Compressed() bool { return c.deflate != nil }

// LocalAddr returns the local network address. The result is shared with
// other connections: do not modify it.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's network address.
func (c *Conn) RemoteAddr() net.Addr {
	if c.rap.IsValid() {
		return net.TCPAddrFromAddrPort(c.rap)
	}
	return c.ext.raddr // set when the connection was made, never replaced
}

// SetValue attaches an application value to the connection (a user ID, a
// session), so that callbacks can find it without a map of their own.
func (c *Conn) SetValue(v any) {
	c.mu.Lock()
	c.extLocked().value = v
	c.mu.Unlock()
}

// Value returns the value attached by SetValue, or nil.
func (c *Conn) Value() any {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ext == nil {
		return nil
	}
	return c.ext.value
}

// SetReadLimit changes the largest message, in bytes, the connection
// accepts from now on, for example to raise it once the peer has
// authenticated. It applies to messages that begin after the call. As for
// Options.ReadLimit, 0 means DefaultReadLimit and -1 removes the limit.
func (c *Conn) SetReadLimit(n int64) {
	switch {
	case n < 0:
		n = -1
	case n == 0:
		n = DefaultReadLimit
	}
	c.readLimit.Store(n)
}

// Done returns a channel that is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Made on first use: most event-driven connections never need one.
	if c.done == nil {
		c.done = make(chan struct{})
		if c.phase == phaseFinished {
			close(c.done)
		}
	}
	return c.done
}

// Err returns nil while the connection is open and, once Done is closed, a
// *CloseError that says why it ended.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase != phaseFinished {
		return nil
	}
	return c.cause
}

// Stats returns the connection's counters.
func (c *Conn) Stats() Stats {
	c.mu.Lock()
	qm, qb := c.q.qMsgs, c.q.qBytes
	if c.lone != nil {
		qm, qb = qm+1, qb+len(c.lone.data)
	}
	c.mu.Unlock()
	return Stats{
		MessagesIn:  c.msgsIn.Load(),
		BytesIn:     c.bytesIn.Load(),
		MessagesOut: c.msgsOut.Load(),
		BytesOut:    c.bytesOut.Load(),
		Dropped:     c.dropped.Load(),
		QueuedMsgs:  qm,
		QueuedBytes: qb,
		Buffered:    c.held.Load(),
		RTT:         time.Duration(c.rtt.Load()),
	}
}

// ReadMessage waits for the next message and returns its payload. It is the
// tutorial's API; Read also returns the message type.
func (c *Conn) ReadMessage() ([]byte, error) {
	_, p, err := c.Read(context.Background())
	return p, err
}

// WriteMessage sends data as a text message, which must be valid UTF-8. It
// is the tutorial's API; Write takes the type and a context.
func (c *Conn) WriteMessage(data []byte) error {
	return c.Write(context.Background(), TextMessage, data)
}

// Read waits for the next message, until ctx is done or the connection has
// ended and every message received before the end has been read. The
// returned slice belongs to the caller.
func (c *Conn) Read(ctx context.Context) (MessageType, []byte, error) {
	q := c.rq
	if q == nil {
		return 0, nil, fmt.Errorf("wsgate: read: %w", ErrEventMode)
	}
	done := c.Done()
	for {
		if m, ok := c.pop(); ok {
			return m.typ, m.data, nil
		}
		select {
		case <-q.notify:
		case <-done:
			if m, ok := c.pop(); ok {
				return m.typ, m.data, nil
			}
			return 0, nil, &closedErr{op: "read", cause: c.Err()}
		case <-ctx.Done():
			return 0, nil, fmt.Errorf("wsgate: read: %w", ctx.Err())
		}
	}
}

// callOnOpen runs Options.OnOpen on the reading goroutine before any input
// is parsed. A panic fails the connection with 1011.
func (c *Conn) callOnOpen() {
	if c.cfg.OnOpen == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			c.handlerPanicked("OnOpen", r)
		}
	}()
	c.cfg.OnOpen(c)
}

// handlerPanicked fails the connection after a callback panicked: the
// panic costs this connection (1011), never the goroutine that serves
// others.
func (c *Conn) handlerPanicked(name string, r any) {
	c.rs.discard = true
	c.mu.Lock()
	c.failLocked(StatusInternalError, fmt.Errorf("%w: %s: %v", ErrHandlerPanic, name, r), "internal error")
	c.mu.Unlock()
}
