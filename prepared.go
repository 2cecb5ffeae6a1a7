package wsgate

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// PreparedMessage is a message encoded once for sending on many
// connections: a broadcast builds one and writes it to every subscriber,
// so the frame is built (and, for connections that negotiated
// permessage-deflate, compressed) once instead of once per connection.
//
// A PreparedMessage is immutable and safe for concurrent use. Server-side
// connections write its frame bytes as they are; client-side connections,
// which must mask every frame with a key of their own, encode it as Write
// would.
type PreparedMessage struct {
	typ   MessageType
	data  []byte // the payload
	frame []byte // header and payload, unmasked and uncompressed

	mu       sync.Mutex                // serializes building deflated
	deflated [2]atomic.Pointer[[]byte] // compressed frames, BestSpeed and Huffman-only, made on first use
}

// NewPreparedMessage encodes a message of type typ with payload data, which
// it copies. Text must be valid UTF-8.
func NewPreparedMessage(typ MessageType, data []byte) (*PreparedMessage, error) {
	switch typ {
	case TextMessage:
		if !utf8.Valid(data) {
			return nil, fmt.Errorf("wsgate: prepare: %w", ErrInvalidUTF8)
		}
	case BinaryMessage:
	default:
		return nil, fmt.Errorf("wsgate: prepare: invalid message type %d", int(typ))
	}
	var hb [maxHeaderLen]byte
	h := putHeader(hb[:], true, false, byte(typ), len(data), false, 0)
	frame := make([]byte, h+len(data))
	copy(frame, hb[:h])
	copy(frame[h:], data)
	return &PreparedMessage{typ: typ, data: frame[h:], frame: frame}, nil
}

// Type returns the message type.
func (pm *PreparedMessage) Type() MessageType { return pm.typ }

// Len returns the payload's length in bytes.
func (pm *PreparedMessage) Len() int { return len(pm.data) }

// frameFor returns the frame a connection that compresses with d (nil:
// no compression) writes for pm.
func (pm *PreparedMessage) frameFor(d *deflater) []byte {
	if d == nil {
		return pm.frame
	}
	return pm.deflatedFrame(d)
}

// deflatedFrame returns the message's compressed frame for d, building it
// on first use. Servers never keep compression context between messages
// (server_no_context_takeover), so one compressed frame fits every
// connection that compresses the same way. Once built, it is read without
// a lock: every subscriber's loop asks for it.
func (pm *PreparedMessage) deflatedFrame(d *deflater) []byte {
	i := 0
	if d.huffmanOnly {
		i = 1
	}
	if f := pm.deflated[i].Load(); f != nil {
		return *f
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if f := pm.deflated[i].Load(); f != nil {
		return *f
	}
	buf := getBuffer()
	*buf = d.compress((*buf)[:0], pm.data)
	var hb [maxHeaderLen]byte
	h := putHeader(hb[:], true, true, byte(pm.typ), len(*buf), false, 0)
	f := make([]byte, h+len(*buf))
	copy(f, hb[:h])
	copy(f[h:], *buf)
	putBuffer(buf)
	pm.deflated[i].Store(&f)
	return f
}

// WritePrepared sends pm. It behaves as Write (same queue policy, same
// errors) but does no per-connection encoding on server-side connections.
func (c *Conn) WritePrepared(ctx context.Context, pm *PreparedMessage) error {
	if !c.server {
		return c.Write(ctx, pm.typ, pm.data)
	}
	return c.writeFrame(ctx, byte(pm.typ), pm.frameFor(c.deflate), len(pm.data))
}
